"""Weights from local checkpoint files into webfg's models (no hub access), whatever wrote them.

The original recipe trained with MMClassification 1.x and MMSelfSup; webfg builds the same
networks with timm. This module renames the original's keys to timm's, adapts the tensors
whose shape depends on input or window size, and checks that every weight found a place.

Layouts recognised from the keys (``detect_layout``):

=================  ============================================================================
``webfg``          a checkpoint written by ``webfg train`` or ``webfg convert``
``timm``           timm's own names (``blocks.N`` / ``layers.N.blocks.M``); also the layouts
                   timm's ``checkpoint_filter_fn`` maps (Microsoft's Swin-V2 releases,
                   facebook's MAE, whose decoder and mask token are dropped)
``mmcls-swinv2``   MMClassification 1.x / MMPretrain ``SwinTransformerV2``
                   (``backbone.stages.N.blocks.M.attn.w_msa.*``, ``ffn.layers.0.0``,
                   ``backbone.norm3``): the ImageNet-21k 192 px checkpoints and the
                   original's fine-tuned Swin-V2-B/L
``mmcls-vit``      MMClassification 1.x / MMPretrain ``VisionTransformer`` and MMSelfSup's MAE
                   encoder (``backbone.layers.N.ln1``, ``attn.qkv``, ``ffn.layers.1``,
                   ``backbone.ln1`` final norm, ``backbone.ln2`` the avg-token norm)
=================  ============================================================================

Heads: MMCls ``LinearClsHead`` (``head.fc``), ``VisionTransformerClsHead``
(``head.layers.head``), the original's sub-centre ArcFace (``head.norm_linear.weight`` of
shape (C·k, d), class-major, plus the ``head.margins`` buffer), timm's classifier, webfg's.

Adaptations: the absolute position embedding is resampled to the model's patch grid
(``timm.layers.resample_abs_pos_embed``; a class-token row is dropped for a model without
one); a patch-embedding kernel of another size is resampled; MMCls's ``nn.Unfold`` channel
order of Swin's patch merging is reordered to timm's; Swin-V2's relative-position index
and coordinate tables are dropped (the model computes them for its own window size, and
the continuous position-bias MLP carries over to any window). For a full conversion the
saved coordinate table is compared with the model's, which catches a window or
``pretrained_window_sizes`` that differs from the one the checkpoint was trained with.

Two modes:

- ``pretrained`` (ModelConfig.pretrained_file, the start of training): every backbone weight
  must load; the classifier loads only when its kind and shape fit the model (else it keeps
  its fresh initialisation), a pre-training encoder may lack the pooled-feature norm
  (``fc_norm``), and parts the model does not have (the MAE decoder, a final norm the model
  replaced by ``fc_norm``, another head) are left out, each named in the log.
- ``full`` (``webfg convert``, a fine-tuned model for inference): all weights must match.

Files load with ``torch.load(weights_only=True)`` only; ``state_dict`` / ``model`` /
``module`` containers and a ``module.`` prefix are unwrapped. A file that does not fit
raises InputError naming it and listing the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
import sys
from pathlib import Path

import torch

from webfg.io import InputError

LAYOUTS = ("webfg", "timm", "mmcls-swinv2", "mmcls-vit")
_DROP = ("relative_position_index", "relative_coords_table", "attn_mask")
_MAE_DECODER = re.compile(r"^(decoder_|decoder\.|mask_token$)")
_SHOW = 8  # keys listed per kind in an error

_MMCLS_VIT = [
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.attn\.(qkv|proj)\.", r"blocks.\1.attn.\2."),
    (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"^ln1\.", "norm."),
    (r"^ln2\.", "fc_norm."),
    (r"^pre_norm\.", "norm_pre."),
]
_MMCLS_SWINV2 = [
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^stages\.(\d+)\.downsample\.", r"layers.\1.downsample."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.", r"layers.\1.blocks.\2.attn."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.", r"layers.\1.blocks.\2.mlp.fc1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.", r"layers.\1.blocks.\2.mlp.fc2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.norm([12])\.", r"layers.\1.blocks.\2.norm\3."),
]


# ---------------------------------------------------------------------------- reading


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, containers unwrapped; InputError names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        reason = f"it holds {found.group(1)}" if found else type(e).__name__
        raise InputError(
            f"{path}: holds pickled Python objects, which webfg does not load (weights_only=True "
            f"refused: {reason}); re-save only its state dict, e.g. with MMPretrain's "
            "tools/model_converters/publish_model.py, in an environment you trust"
        ) from None
    except Exception as e:  # RuntimeError (not a zip/torch file), EOFError, ...
        raise InputError(f"{path}: not a torch checkpoint ({type(e).__name__}: {e})") from None
    return unwrap(obj, path)


def unwrap(obj, path="checkpoint") -> dict[str, torch.Tensor]:
    """Descend ``state_dict`` / ``model`` / ``module`` containers; strip a ``module.`` prefix."""
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in ("state_dict", "model", "module") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            kinds = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:_SHOW])
            raise InputError(f"{path}: not a state dict (no tensors and no 'state_dict'/'model' entry; has {kinds})")
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: not a state dict (holds {type(obj).__name__})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise InputError(f"{path}: not a state dict: {_abbrev(not_tensors)} hold no tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _is_tensor_dict(d: dict) -> bool:
    return any(isinstance(v, torch.Tensor) for v in d.values())


def detect_layout(sd: dict) -> str:
    """One of LAYOUTS, from the key names."""
    keys = list(sd)
    if "class_counts" in sd and any(k.startswith("backbone.") for k in keys):
        return "webfg"
    if any(re.match(r"^(backbone\.)?stages\.\d+\.blocks\.\d+\.attn\.w_msa\.", k) for k in keys):
        return "mmcls-swinv2"
    if any(re.match(r"^(backbone\.)?layers\.\d+\.(ln1|ffn\.layers\.0\.0)\.", k) for k in keys):
        return "mmcls-vit"
    return "timm"


# ---------------------------------------------------------------------------- renaming


@dataclasses.dataclass
class Converted:
    """A checkpoint in timm's names: the backbone without classifier, and the head apart."""

    layout: str
    backbone: dict
    head_kind: str | None = None  # "linear" | "arcface" | None
    head: dict = dataclasses.field(default_factory=dict)  # weight, bias / weight, margins
    class_counts: torch.Tensor | None = None
    dropped: list = dataclasses.field(default_factory=list)  # source parts the model has no place for


def to_timm(sd: dict, layout: str, classifier_name: str = "head") -> Converted:
    """Rename ``sd`` (of ``layout``) to timm's names; ``classifier_name`` is the timm model's
    classifier module (``head`` for ViT, ``head.fc`` for Swin-V2)."""
    if layout == "webfg":
        out = Converted(layout, {}, class_counts=sd.get("class_counts"))
        for k, v in sd.items():
            if k.startswith("backbone."):
                out.backbone[k[len("backbone.") :]] = v
            elif k in ("head.weight", "head.margins"):
                out.head_kind = "arcface"
                out.head[k[len("head.") :]] = v
        _take_linear(out, classifier_name)
        return out
    if layout == "timm":
        decoder = [k for k in sd if _MAE_DECODER.match(k)]  # facebook MAE's pre-training decoder
        out = Converted(layout, {k: v for k, v in sd.items() if k not in decoder}, dropped=decoder)
        _take_linear(out, classifier_name)
        return out
    rules = _MMCLS_SWINV2 if layout == "mmcls-swinv2" else _MMCLS_VIT
    prefixed = any(k.startswith("backbone.") for k in sd)
    out = Converted(layout, {})
    last_stage = max(
        (int(m.group(1)) for k in sd if (m := re.match(r"^(?:backbone\.)?stages\.(\d+)\.", k))), default=-1
    )
    for k, v in sd.items():
        if k.startswith("head."):
            _mmcls_head(out, k, v)
            continue
        if prefixed and not k.startswith("backbone."):
            out.dropped.append(k)  # neck (MAE decoder), data preprocessor, target generator
            continue
        name = k[len("backbone.") :] if prefixed else k
        if layout == "mmcls-swinv2" and re.match(rf"^norm{last_stage}\.", name):
            name = "norm." + name.split(".", 1)[1]
        for pattern, repl in rules:
            name, n = re.subn(pattern, repl, name)
            if n:
                break
        if layout == "mmcls-swinv2" and re.match(r"^layers\.\d+\.downsample\.reduction\.weight$", name):
            v = unfold_to_timm_order(v)
        out.backbone[name] = v
    return out


def _take_linear(out: Converted, classifier_name: str) -> None:
    """Move a timm-named linear classifier out of the backbone into the head."""
    for part in ("weight", "bias"):
        key = f"{classifier_name}.{part}"
        if key in out.backbone:
            out.head_kind = "linear"
            out.head[part] = out.backbone.pop(key)


def _mmcls_head(out: Converted, key: str, value) -> None:
    m = re.match(r"^head\.(fc|layers\.head)\.(weight|bias)$", key)
    if m:
        out.head_kind = "linear"
        out.head[m.group(2)] = value
    elif key == "head.norm_linear.weight":
        out.head_kind = "arcface"
        out.head["weight"] = value
    elif key == "head.margins":
        out.head["margins"] = value
    else:
        out.dropped.append(key)  # e.g. a ViT head's pre_logits layer: no place in a timm model


def unfold_to_timm_order(w: torch.Tensor) -> torch.Tensor:
    """Swin patch-merging reduction weight (out, 4C): MMCls gathers the 2×2 neighbours with
    nn.Unfold (channel-major: c·4 + 2i + j), timm concatenates them (neighbour-major: the
    neighbours x00, x10, x01, x11, i.e. (2j + i)·C + c)."""
    out_dim, in_dim = w.shape
    return w.reshape(out_dim, in_dim // 4, 2, 2).permute(0, 3, 2, 1).reshape(out_dim, in_dim)


def timm_to_unfold_order(w: torch.Tensor) -> torch.Tensor:
    """Inverse of ``unfold_to_timm_order``."""
    out_dim, in_dim = w.shape
    return w.reshape(out_dim, 2, 2, in_dim // 4).permute(0, 3, 2, 1).reshape(out_dim, in_dim)


# ---------------------------------------------------------------------------- loading


def classifier_name(backbone: torch.nn.Module) -> str:
    """The module path of a timm model's classifier (``head``, ``head.fc``, ``fc`` ...)."""
    target = backbone.get_classifier()
    return next(n for n, m in backbone.named_modules() if m is target)


def load_weights(model, path, mode: str = "pretrained", log=print, state_dict=None) -> Converted:
    """Load the checkpoint at ``path`` into a webfg Classifier (see the module docstring);
    ``state_dict``: its tensors when already read."""
    if mode not in ("pretrained", "full"):
        raise ValueError(f"mode must be 'pretrained' or 'full', not {mode!r}")
    sd = read_state_dict(path) if state_dict is None else state_dict
    layout = detect_layout(sd)
    conv = to_timm(sd, layout, classifier_name(model.backbone))
    notes = []
    conv.backbone = _adapt_backbone(conv.backbone, model.backbone, mode, path, notes)
    if layout == "timm":
        conv.backbone = _timm_filter(conv.backbone, model.backbone, path)
        _take_linear(conv, classifier_name(model.backbone))  # a classifier the filter renamed
    state, more = _assemble(model, conv, mode, path)
    model.load_state_dict(state, strict=False)
    for note in notes + more + ([f"left out {_abbrev(conv.dropped)}"] if conv.dropped else []):
        log(f"{path}: {note}")
    log(f"{path}: loaded {len(state)} tensors ({layout} layout, {mode})")
    return conv


def _timm_filter(backbone_sd: dict, backbone, path) -> dict:
    """timm's own per-model checkpoint filter (other releases' layouts, resampling)."""
    filter_fn = getattr(sys.modules[type(backbone).__module__], "checkpoint_filter_fn", None)
    if filter_fn is None:
        return backbone_sd
    try:
        return filter_fn(backbone_sd, backbone)
    except Exception as e:
        raise InputError(f"{path}: does not fit {type(backbone).__name__} ({type(e).__name__}: {e})") from None


def _assemble(model, conv: Converted, mode: str, path):
    """The Classifier state dict to load, after shape adaptation and the key checks."""
    target = model.state_dict()
    notes = []
    state = {f"backbone.{k}": v for k, v in conv.backbone.items()}
    head_keys = _head_keys(model)
    head_state = {head_keys[p]: v for p, v in conv.head.items() if conv.head_kind == model.cfg.head and p in head_keys}
    if mode == "pretrained":
        head_state.pop("head.margins", None)  # margins follow this training list's class counts
    head_fits = bool(head_state) and all(k in target and target[k].shape == v.shape for k, v in head_state.items())
    if head_fits or mode == "full":
        state.update(head_state)
    elif conv.head_kind:
        notes.append(
            f"its {conv.head_kind} head ({_shapes(conv.head)}) does not fit this "
            f"{model.cfg.head} head: the head starts fresh"
        )
    if mode == "full" and conv.class_counts is not None and "class_counts" in target:
        state["class_counts"] = conv.class_counts
    if mode == "full" and conv.head_kind and conv.head_kind != model.cfg.head:
        raise InputError(f"{path}: its head is {conv.head_kind}, the model config says head: {model.cfg.head}")

    recomputed = {"class_counts", "head.margins"}  # buffers the Classifier derives from class counts
    allowed_missing = set(recomputed)
    allowed_unexpected = set()
    if mode == "pretrained":
        allowed_missing |= set(head_keys.values())
        allowed_missing |= {k for k in target if k.startswith("backbone.fc_norm.")}
        if "cls_token" not in conv.backbone:
            allowed_missing.add("backbone.cls_token")
        norm = getattr(model.backbone, "norm", None)
        if norm is not None and not any(True for _ in norm.parameters()):
            allowed_unexpected |= {k for k in state if k.startswith("backbone.norm.")}
    missing = [k for k in target if k not in state and k not in allowed_missing]
    unexpected = [k for k in state if k not in target and k not in allowed_unexpected]
    mismatched = [k for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_abbrev(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_abbrev(unexpected)}")
        if mismatched:
            shown = [f"{k} {tuple(state[k].shape)} vs model {tuple(target[k].shape)}" for k in mismatched]
            parts.append(f"{len(mismatched)} of another shape: {_abbrev(shown)}")
        raise InputError(
            f"{path}: does not match {model.cfg.arch} with a {model.cfg.head} head "
            f"(read as {conv.layout} layout); " + "; ".join(parts)
        )
    for k in sorted(allowed_unexpected & set(state)):
        notes.append(f"left out {k} (the model has no such weight)")
        del state[k]
    fresh = sorted(k for k in (allowed_missing - recomputed) if k in target and k not in state)
    if fresh:
        notes.append(f"initialised fresh: {_abbrev(fresh)}")
    return state, notes


def _head_keys(model) -> dict:
    """Canonical head part name → the Classifier's key."""
    if model.cfg.head == "arcface":
        return {"weight": "head.weight", "margins": "head.margins"}
    name = classifier_name(model.backbone)
    return {"weight": f"backbone.{name}.weight", "bias": f"backbone.{name}.bias"}


def _adapt_backbone(sd: dict, backbone, mode: str, path, notes: list) -> dict:
    """Drop the window buffers the model recomputes; for a pretrained start also resample the
    position embedding and patch kernel to the model's grid and add or drop a class-token row.
    A full conversion adapts nothing: a fine-tuned model must be rebuilt as it was trained."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    sd = dict(sd)
    if mode == "full":
        _check_window_tables(sd, backbone, path)
    for k in [k for k in sd if k.rsplit(".", 1)[-1] in _DROP]:
        del sd[k]
    if mode == "full":
        return sd
    target = backbone.state_dict()
    w, tw = sd.get("patch_embed.proj.weight"), target.get("patch_embed.proj.weight")
    if w is not None and tw is not None and w.ndim == 4 and w.shape[-2:] != tw.shape[-2:]:
        sd["patch_embed.proj.weight"] = resample_patch_embed(w, list(tw.shape[-2:]), verbose=False)
        notes.append(f"patch kernel resampled {tuple(w.shape[-2:])} -> {tuple(tw.shape[-2:])}")
    pos = sd.get("pos_embed")
    if pos is None or "pos_embed" not in target or pos.shape == target["pos_embed"].shape:
        return sd
    prefix = 1 if "cls_token" in sd else 0
    model_prefix = 0 if getattr(backbone, "no_embed_class", False) else getattr(backbone, "num_prefix_tokens", 0)
    old = math.isqrt(pos.shape[1] - prefix)
    if model_prefix > 1 or old * old != pos.shape[1] - prefix or pos.shape[-1] != target["pos_embed"].shape[-1]:
        return sd  # not a plain square grid (+ class token) of this width: the key check reports it
    grid = list(backbone.patch_embed.grid_size)
    if [old, old] != grid:
        pos = resample_abs_pos_embed(pos, grid, num_prefix_tokens=prefix, verbose=False)
        notes.append(f"position embedding resampled {old}x{old} -> {grid[0]}x{grid[1]}")
    if prefix and not model_prefix:
        pos = pos[:, 1:]
        notes.append("class token dropped (the model has none)")
        if "cls_token" not in target:
            del sd["cls_token"]
    elif model_prefix and not prefix:
        pos = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
        notes.append("class token added (zero position, fresh token)")
    sd["pos_embed"] = pos
    return sd


def _check_window_tables(sd: dict, backbone, path) -> None:
    """A fine-tuned Swin-V2 saved its coordinate tables: they must equal the model's, else the
    model's window or pretrained_window_sizes differ from the ones it was trained with."""
    buffers = dict(backbone.named_buffers())
    for k, v in sd.items():
        if not k.endswith("relative_coords_table") or k not in buffers:
            continue
        mine = buffers[k]
        if v.shape != mine.shape or not torch.allclose(v.float(), mine.float(), atol=1e-5):
            raise InputError(
                f"{path}: {k} was computed for window {_window(v)}, the model uses window {_window(mine)}: "
                "set window_size / pretrained_window_sizes in arch_kwargs to the checkpoint's "
                "(the original's Swin-V2 at 384: window_size [24,24,24,12] from pretrained [12,12,12,6])"
            )


def _window(table: torch.Tensor) -> str:
    """'W (normalised as pretrained window P)' from a Swin-V2 log-spaced coordinate table."""
    w = (table.shape[-2] + 1) // 2
    top = float(table[..., 1].max())
    if w < 2 or top <= 0:
        return str(w)
    pretrained = 1 + 8 * (w - 1) / (2 ** (top * 3) - 1)
    return f"{w} (pretrained window {round(pretrained)})"


def _abbrev(items, n: int = _SHOW) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... and {len(items) - n} more" if len(items) > n else "")


def _shapes(head: dict) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in head.items())


# ---------------------------------------------------------------------------- webfg convert


def head_size(conv: Converted, k: int) -> int:
    """Number of classes of a converted head (ArcFace rows are C·k)."""
    if conv.head_kind == "linear":
        return int(conv.head["weight"].shape[0])
    if conv.head_kind == "arcface":
        if "margins" in conv.head:
            return int(conv.head["margins"].numel())
        rows = int(conv.head["weight"].shape[0])
        if rows % k:
            raise InputError(f"ArcFace head has {rows} rows, not a multiple of arcface_k={k}")
        return rows // k
    raise InputError("the checkpoint holds no classification head")


def model_config(path=None, model: str | None = None, **fields):
    """A ModelConfig from a model YAML, from ``models.<model>`` of a pipeline config, or from
    fields alone (``arch``, ``head``, ``arch_kwargs``, ``img_size``); given fields override."""
    from webfg.config import ModelConfig
    from webfg.io import read_yaml

    d, where = {}, "model config"
    if path:
        d = read_yaml(path) or {}
        if not isinstance(d, dict):
            raise InputError(f"{path}: expected a mapping of model settings, got {type(d).__name__}")
        where = str(path)
        if "models" in d and not model:
            raise InputError(f"{path}: a pipeline config; name the model with --model (one of {sorted(d['models'])})")
        if model:
            if model not in (d.get("models") or {}):
                raise InputError(f"{path}: no models.{model} (has {sorted(d.get('models') or {})})")
            d, where = dict(d["models"][model]), f"{path}: models.{model}"
            d.pop("resources", None)
    d.update({k: v for k, v in fields.items() if v is not None})
    if "arch" not in d:
        raise InputError("convert: give --config (a model YAML, or a pipeline config with --model) or --arch")
    try:
        return ModelConfig.from_dict(d, where=where)
    except ValueError as e:
        raise InputError(str(e)) from None


def class_counts_from_list(path, num_classes: int) -> torch.Tensor:
    """Per-class sample counts of a labelled split list (the original's ann_file)."""
    from webfg.io import read_split_list

    labels = [y for _, y in read_split_list(path, num_classes=num_classes)]
    return torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes).float()


def convert_checkpoint(src, cfg, out, num_classes: int | None = None, train_list=None, log=print) -> dict:
    """Write ``src`` (any supported layout, with its head) as a webfg checkpoint that
    ``webfg infer`` runs. ``train_list`` (the list the model was trained on) gives the class
    counts behind the linear head's logit adjustment, and the ArcFace margins where the file
    has none; without it the counts are the file's own (webfg) or all one (adjustment off)."""
    from webfg.io import atomic_path
    from webfg.model import Classifier

    sd = read_state_dict(src)
    layout = detect_layout(sd)
    cfg = dataclasses.replace(cfg, pretrained_file=None)
    probe = to_timm(sd, layout, "head.fc" if any(k.endswith("head.fc.weight") for k in sd) else "head")
    try:
        found = head_size(probe, cfg.arcface_k)
    except InputError as e:
        raise InputError(f"{src}: {e}") from None
    if num_classes is not None and num_classes != found:
        raise InputError(f"{src}: its head has {found} classes, --num-classes says {num_classes}")
    if train_list is not None:
        class_counts = class_counts_from_list(train_list, found)
    elif probe.class_counts is not None:
        class_counts = probe.class_counts
    else:
        class_counts = torch.ones(found)
    model = Classifier(cfg, found, class_counts, load_pretrained=False)
    del probe
    load_weights(model, src, mode="full", log=log, state_dict=sd)
    meta = {"converted_from": str(src), "layout": layout, "class_counts_from": str(train_list) if train_list else None}
    with atomic_path(out) as tmp:
        torch.save(
            {
                "state_dict": model.state_dict(),
                "config": json.dumps(cfg.to_dict()),
                "num_classes": found,
                "meta": json.dumps(meta),
            },
            tmp,
        )
    log(f"{out}: {cfg.arch}, {cfg.head} head, {found} classes")
    return meta
