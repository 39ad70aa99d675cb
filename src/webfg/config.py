"""Per-model configuration: strict (unknown keys, missing keys and wrong types fail with an
InputError naming the key), torch-free so the workflow can validate every model at parse
time without importing torch (``check_arch`` alone imports timm)."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field

from webfg.io import InputError


@dataclass
class ModelConfig:
    """Everything that defines one model's training and inference (strict: unknown keys fail)."""

    arch: str
    head: str = "linear"  # "linear" (CE + smoothing + mixup, logit adjustment) or "arcface"
    arch_kwargs: dict = field(default_factory=dict)
    pretrained_file: str | None = (
        None  # a local checkpoint (timm, MMCls, MMSelfSup, webfg: webfg.convert); never a hub download
    )
    img_size: int = 224
    epochs: int = 30
    batch_size: int = 16
    base_lr: float = 1e-3  # per 1024 images: lr = base_lr * batch_size * world_size / 1024
    min_lr: float = 1e-6
    warmup_epochs: float = 5
    warmup_lr_ratio: float = 1e-4  # warm-up starts at base lr x this
    weight_decay: float = 0.05
    layer_decay: float | None = None  # e.g. 0.75 for fine-tuning a pretrained ViT
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.8  # linear head only (ArcFace needs hard labels)
    cutmix_alpha: float = 1.0
    randaugment: str | None = "rand-m9-mstd0.5-inc1"
    random_erasing: float = 0.25
    color_jitter: float = 0.4  # timm applies it only when randaugment is off; 0 disables
    hflip: float = 0.5
    crop_scale: tuple[float, float] = (0.08, 1.0)
    test_crop_pct: float = 0.875  # short side img_size/crop_pct, centre crop img_size
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    arcface_k: int = 3
    arcface_scale: float = 30.0
    margin_min: float = 0.05
    margin_max: float = 0.5
    eql_tau: float | None = 1.0  # None: plain cross-entropy on the ArcFace logits
    logit_adjust_tau: float = 1.0  # linear head, at inference; 0 switches it off
    tta_flip: bool = True
    soup_last: int = 1  # uniform soup of the last N epochs' weights (1 = last epoch only)
    seed: int = 0
    # scale-out: batch_size is per process (GPU); the optimizer sees
    # batch_size x world size x grad_accum images per update
    global_batch_size: int | None = None  # if set, grad_accum = this / (batch_size x world size)
    grad_accum: int = 1
    precision: str = "auto"  # auto (bf16 on GPUs that have it, else fp32) | fp32 | bf16 | fp16
    # runtime knobs: they do not change what is learned (not part of the resume fingerprint)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    num_workers: int | None = (
        None  # data-loading processes per training process; None: from the job's CPUs (webfg.engine.loader_workers)
    )
    checkpoint_every: int = 0  # also checkpoint every N optimizer updates (0: once per epoch)

    @classmethod
    def from_dict(cls, d: dict, where: str = "model config") -> ModelConfig:
        cfg = cls(**_checked_fields(cls, d, where))
        if cfg.head not in ("linear", "arcface"):
            raise InputError(f"{where}.head: {cfg.head!r} is not one of ['arcface', 'linear']")
        if cfg.precision not in PRECISIONS:
            raise InputError(f"{where}.precision: {cfg.precision!r} is not one of {list(PRECISIONS)}")
        for key in ("epochs", "batch_size", "grad_accum", "soup_last"):
            if getattr(cfg, key) < 1:
                raise InputError(f"{where}.{key}: must be at least 1, got {getattr(cfg, key)}")
        if cfg.global_batch_size is not None and cfg.global_batch_size % cfg.batch_size:
            raise InputError(
                f"{where}.global_batch_size: {cfg.global_batch_size} is not a multiple of batch_size {cfg.batch_size}"
            )
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def learning_dict(self) -> dict:
        """The fields that change what is learned (the runtime knobs removed)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}


def check_arch(arch: str, where: str, cache_dir=None) -> None:
    """An architecture timm does not know fails here, at parse time, with its close
    matches, rather than when its job starts. Listing timm's models imports torch (seconds);
    with ``cache_dir`` the list is kept there per timm version, so later parses read a file."""
    import difflib

    names = timm_model_names(cache_dir)
    if arch.split(".", 1)[0] in names:  # "name.pretrained_tag" is the model "name"
        return
    close = difflib.get_close_matches(arch, sorted(names), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
    raise InputError(f"{where}.arch: {arch!r} is not a timm model (timm {_timm_version()}){hint}")


def _timm_version() -> str:
    from importlib.metadata import version

    return version("timm")


def timm_model_names(cache_dir=None) -> set[str]:
    """Every model name timm registers (``timm.list_models()``), cached per timm version."""
    from pathlib import Path

    cache = Path(cache_dir) / f"timm-{_timm_version()}-models.txt" if cache_dir else None
    if cache is not None and cache.is_file():
        return set(cache.read_text(encoding="utf-8").split())
    import timm

    names = timm.list_models()
    if cache is not None:
        from webfg.io import write_text

        write_text(cache, "".join(n + "\n" for n in names))
    return set(names)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIME_FIELDS = ("channels_last", "compile", "num_workers", "checkpoint_every")


@dataclass
class MAEConfig:
    """Masked-autoencoder pre-training of a timm ViT encoder (webfg.mae); strict like ModelConfig.

    Defaults follow MAE (He et al. 2022) for ViT-L: mask 75 %, decoder 8 blocks x 512,
    normalised-pixel loss, AdamW betas (0.9, 0.95), 40 warm-up epochs; the recipe runs 1600 epochs.
    """

    arch: str  # the fine-tuning model's timm VisionTransformer name ...
    arch_kwargs: dict = field(default_factory=dict)  # ... and kwargs, so the encoder keys match
    img_size: int = 224
    epochs: int = 1600
    batch_size: int = 64
    base_lr: float = 6e-4  # per 1024 images (MAE's 1.5e-4 per 256)
    min_lr: float = 0.0
    warmup_epochs: float = 40
    warmup_lr_ratio: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    norm_pix_loss: bool = True  # targets: each patch's pixels normalised by its own mean/std
    drop_path: float = 0.0
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: float = 0.5
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    seed: int = 0
    # scale-out, as ModelConfig: batch_size is per process (GPU)
    global_batch_size: int | None = None  # if set, grad_accum = this / (batch_size x world size)
    grad_accum: int = 1
    precision: str = "auto"  # auto (bf16 on GPUs that have it, else fp32) | fp32 | bf16 | fp16
    # runtime knobs (not part of the resume fingerprint)
    num_workers: int | None = None  # data-loading processes per process; None: from the job's CPUs
    checkpoint_every: int = 0  # also checkpoint every N optimizer updates (0: once per epoch)

    @classmethod
    def from_dict(cls, d: dict, where: str = "pretrain config") -> MAEConfig:
        cfg = cls(**_checked_fields(cls, d, where))
        if not 0 < cfg.mask_ratio < 1:
            raise InputError(f"{where}.mask_ratio: {cfg.mask_ratio} must lie strictly between 0 and 1")
        if cfg.precision not in PRECISIONS:
            raise InputError(f"{where}.precision: {cfg.precision!r} is not one of {list(PRECISIONS)}")
        for key in ("epochs", "batch_size", "grad_accum"):
            if getattr(cfg, key) < 1:
                raise InputError(f"{where}.{key}: must be at least 1, got {getattr(cfg, key)}")
        if cfg.global_batch_size is not None and cfg.global_batch_size % cfg.batch_size:
            raise InputError(
                f"{where}.global_batch_size: {cfg.global_batch_size} is not a multiple of batch_size {cfg.batch_size}"
            )
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def learning_dict(self) -> dict:
        """The fields that change what is learned (the resume fingerprint reads this)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}


# timm kwargs that may differ between pre-training and fine-tuning: the position table is
# resampled to another image size, and drop-path is a training setting
PRETRAIN_FREE_KWARGS = ("img_size", "drop_path_rate")


def check_pretrain_matches(model: ModelConfig, mae: MAEConfig, model_where: str, mae_where: str) -> None:
    """A model fine-tuned from an MAE encoder must build the same timm architecture
    (``arch`` and ``arch_kwargs`` other than img_size/drop_path_rate), or the encoder's
    weights would not load; the InputError names the model's key."""
    if model.arch != mae.arch:
        raise InputError(
            f"{model_where}.arch: {model.arch!r} is not the arch {mae.arch!r} of {mae_where}, its pretrained_file"
        )
    mine = {k: v for k, v in model.arch_kwargs.items() if k not in PRETRAIN_FREE_KWARGS}
    theirs = {k: v for k, v in mae.arch_kwargs.items() if k not in PRETRAIN_FREE_KWARGS}
    if mine != theirs:
        key = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))[0]
        raise InputError(
            f"{model_where}.arch_kwargs.{key}: {mine.get(key)!r} differs from {theirs.get(key)!r} in "
            f"{mae_where}.arch_kwargs, its pretrained_file (only {list(PRETRAIN_FREE_KWARGS)} may differ)"
        )


def _checked_fields(cls, d: dict, where: str) -> dict:
    """The fields of ``d`` checked against dataclass ``cls``: unknown keys and wrong types fail."""
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a mapping of settings, got {type(d).__name__} {d!r:.60}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known, key=str)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in d]
    if missing:
        raise InputError(f"{where}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    return {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in d.items()}


def _coerce(value, hint, where):
    """Check a config value against the field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(f"{where}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is dict and isinstance(value, dict):
        return value
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise InputError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


SCHEMA_PATH = "workflow/schemas/config.schema.yaml"  # relative to the checkout (editable install)


@functools.cache
def config_schema() -> dict:
    """The workflow's config schema: the one source of every config default, which the
    command-line options and the job-resource defaults read too."""
    from pathlib import Path

    from webfg.io import read_yaml

    path = Path(__file__).resolve().parents[2] / SCHEMA_PATH
    if not path.is_file():
        raise InputError(f"{path}: the config schema is missing; webfg runs from its checkout (pip install -e)")
    return read_yaml(path)


def schema_default(key: str):
    """The schema's default of a dotted config key; ``*`` steps into a mapping's entries,
    e.g. ``models.*.resources.gpus`` or ``final.redistribute.method``."""
    schema = config_schema()
    node = schema
    for part in key.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
        while "$ref" in node and "default" not in node:  # "#/a/b" -> schema["a"]["b"]
            node = functools.reduce(lambda n, k: n[k], node["$ref"].removeprefix("#/").split("/"), schema)
    return node["default"]
