"""``webfg init <data dir>``: inspect a dataset in the ACCV layout and write a config for it.

The inspection reads what clean_split will read (class folders, test split folders,
image headers and pixels), so a dataset that passes here does not stop the workflow
later. The config's models and resources are chosen from the data size: a CPU-sized
pair of models below ``GPU_TIER_IMAGES`` training images, the recipe's pretrained
Swin-V2-B / ViT-L on GPUs above. Every key of the written YAML carries a comment.
Nothing is written when the dataset has a problem (the error lists them).
"""

from __future__ import annotations

import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image

from webfg.clean import class_ids, image_files, unread_files
from webfg.images import decode_error
from webfg.io import InputError, write_text
from webfg.progress import progress

GPU_TIER_IMAGES = 20_000  # fewer training images than this: models that train on CPU
MAX_CHECKED = 20_000  # images decoded at most (an even sample beyond that)
NOT_TEST = {"train", "meta", "answers"}  # folders under the root that are not test splits


@dataclass
class DatasetReport:
    root: Path
    class_names: list[str]  # by id
    class_counts: list[int]  # by id
    test_counts: dict[str, int]
    sizes: list[tuple[int, int]]  # (width, height) of the decoded sample
    checked: int = 0
    broken: list[str] = field(default_factory=list)  # "relpath: why"
    warnings: list[str] = field(default_factory=list)

    @property
    def num_train(self) -> int:
        return sum(self.class_counts)

    def summary(self) -> str:
        c = self.class_counts
        words = not all(n.isdigit() for n in self.class_names)
        lines = [
            f"{self.root}: ACCV layout",
            f"  classes: {len(c)} ({'folders named by words, ids in sorted order' if words else 'integer ids'})",
            f"  train images: {self.num_train} (per class: min {min(c)}, median {statistics.median(c):g}, max {max(c)})",
            "  test splits: " + ", ".join(f"{s} ({n} images)" for s, n in self.test_counts.items()),
        ]
        if self.sizes:
            ws, hs = [w for w, _ in self.sizes], [h for _, h in self.sizes]
            lines.append(
                f"  image sizes ({self.checked} decoded): width {min(ws)}-{max(ws)} (median "
                f"{statistics.median(ws):g}), height {min(hs)}-{max(hs)} (median {statistics.median(hs):g})"
            )
        if words:
            lines.append(
                "  class ids: "
                + ", ".join(f"{i}={n}" for i, n in enumerate(self.class_names[:8]))
                + (", ..." if len(c) > 8 else "")
                + " (results/clean/classes.tsv)"
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _probe(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(size, None) for an image that decodes fully (as clean_split and training decode
    it), (None, why) otherwise."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable: {e.strerror}"
    err = decode_error(data)
    if err:
        return None, err
    with Image.open(io.BytesIO(data)) as im:
        return im.size, None


def inspect_dataset(root, test_splits: list[str] | None = None, allow_broken_train: bool = False) -> DatasetReport:
    """Check ``root`` against the ACCV layout; raise InputError listing every problem found."""
    root = Path(root)
    expected = (
        "expected <root>/train/<class>/<image> (class folders: ids 0000, 0001, ... or names) "
        "and one flat folder of images per test split (testa/, testb/)"
    )
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; {expected}")
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    train = root / "train"
    if not train.is_dir():
        raise InputError(f"{root}: no train/ folder (found {entries[:10] or 'nothing'}); {expected}")
    problems: list[str] = []
    warnings: list[str] = []
    folders = sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p.name for p in train.iterdir() if not p.is_dir() and not p.name.startswith(".")]
    if loose:
        warnings.append(
            f"{len(loose)} file(s) directly in train/ have no class (e.g. {sorted(loose)[0]}): "
            "clean_split lists them in removed.tsv; images belong in train/<class>/"
        )
    if not folders:
        raise InputError(f"{train}: no class folders (found {len(loose)} loose files); {expected}")
    ids = class_ids([p.name for p in folders], train)
    names = sorted(ids, key=ids.get)
    if all(n.isdigit() for n in names):
        missing = sorted(set(range(max(ids.values()) + 1)) - set(ids.values()))
        if missing:
            problems.append(f"{train}: integer class ids must be 0..C-1 without gaps; missing {missing[:10]}")
    files = {n: image_files(train / n) for n in names}
    empty = [n for n in names if not files[n]]
    if empty:
        problems.append(
            f"{train}: {len(empty)} empty class folder(s): {empty[:10]} (no image files; "
            "Thumbs.db, desktop.ini and hidden files do not count)"
        )
    unread = [u for n in names for u in unread_files(root, train / n, "not read")]
    if unread:
        warnings.append(
            f"{len(unread)} file(s) in class folders are not images clean_split reads "
            f"(e.g. {unread[0][0]}: {unread[0][1]}); they are listed in removed.tsv"
        )
    singles = [n for n in names if len(files[n]) == 1]
    if singles:
        warnings.append(f"{len(singles)} class(es) with a single image (no val image for them): {singles[:5]}")

    if test_splits is None:
        test_splits = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_TEST
        )
        if not test_splits:
            problems.append(f"{root}: no test split folder next to train/ (found {entries}); {expected}")
        elif len(test_splits) < 2:
            warnings.append(
                f"found {len(test_splits)} test split folder ({', '.join(test_splits)}); the ACCV "
                "layout has two (testa/, testb/): the config predicts and submits only "
                f"{', '.join(test_splits)}"
            )
    test_files = {}
    for split in test_splits:
        folder = root / split
        if not folder.is_dir():
            problems.append(f"{folder}: test split folder not found (found {entries})")
            continue
        test_files[split] = image_files(folder)
        nested = [p.name for p in folder.iterdir() if p.is_dir()]
        if nested:
            warnings.append(f"{folder}: sub-folders are ignored, a test split is one flat folder ({nested[:3]})")
        if not test_files[split]:
            problems.append(f"{folder}: test split has no images")

    # decode every image (or an even sample of MAX_CHECKED): what clean_split will do to all
    train_paths = [f for n in names for f in files[n]]
    all_paths = [(f, False) for f in train_paths] + [(f, True) for s in test_files for f in test_files[s]]
    step = max(1, math.ceil(len(all_paths) / MAX_CHECKED))
    sample = all_paths[::step]
    sizes, broken_train, broken_test = [], [], []
    for path, is_test in progress(sample, desc="webfg init: decode", unit="img"):
        size, err = _probe(path)
        if size:
            sizes.append(size)
        else:
            (broken_test if is_test else broken_train).append(f"{path.relative_to(root).as_posix()}: {err}")
    if broken_test:
        more = f"; and {len(broken_test) - 5} more" if len(broken_test) > 5 else ""
        problems.append(
            f"{len(broken_test)} unreadable test image(s) (every test image must decode): "
            + "; ".join(broken_test[:5])
            + more
        )
    sampled_train = sum(1 for _, is_test in sample if not is_test)
    if broken_train:
        more = f"; and {len(broken_train) - 5} more" if len(broken_train) > 5 else ""
        msg = (
            f"{len(broken_train)} of {sampled_train} decoded training image(s) unreadable: "
            + "; ".join(broken_train[:5])
            + more
        )
        if allow_broken_train:
            warnings.append(msg + " (clean_split will drop them: --allow-broken)")
        else:
            problems.append(msg + " (remove them, or pass --allow-broken to let clean_split drop them)")
    # broken training images are not training images: out of the counts (by class)
    broken_paths = {b.split(": ", 1)[0] for b in broken_train}
    counts = [sum(f.relative_to(root).as_posix() not in broken_paths for f in files[n]) for n in names]
    emptied = [n for n, c in zip(names, counts) if c == 0 and files[n]]
    if emptied and step == 1:
        problems.append(
            f"{train}: class folder(s) {emptied[:10]} hold no readable image (clean_split would leave them empty)"
        )
    if problems:
        raise InputError(f"{root}: not usable as it is; nothing written.\n  " + "\n  ".join(problems))
    if step > 1:
        warnings.append(
            f"decoded an even sample of {len(sample)} of {len(all_paths)} images; clean_split decodes all of them"
        )
    return DatasetReport(
        root,
        names,
        counts,
        {s: len(f) for s, f in test_files.items()},
        sizes,
        checked=len(sample),
        broken=broken_train,
        warnings=warnings,
    )


# ------------------------------------------------------------------ the config


def _yaml(value) -> str:
    """A value in YAML flow style, as PyYAML reads it back (1.0e-05 stays a float)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _cpu_models(img: int) -> dict[str, tuple[dict, str]]:
    """The demo's two CPU-trainable families (from scratch), at ``img`` pixels."""
    common = {
        "img_size": (img, "train/test resolution (pixels)"),
        "epochs": (8, "passes over the training list per round"),
        "batch_size": (64, "images per step"),
        "base_lr": (0.016, "learning rate per 1,024 images (lr = base_lr x batch / 1024)"),
        "min_lr": (1.0e-5, "end of the cosine schedule"),
        "warmup_epochs": (1, "linear warm-up"),
        "hflip": (0.5, "horizontal flip probability (0 for text, digits, asymmetric objects)"),
        "tta_flip": (True, "average predictions with the mirrored image"),
        "crop_scale": ([0.6, 1.0], "RandomResizedCrop area range"),
        "test_crop_pct": (1.0, "resize to img_size, no crop"),
        "randaugment": (None, "null: RandAugment hurts small models trained from scratch"),
        "soup_last": (2, "average the weights of the last N epochs"),
    }
    swin = {
        "arch": ("swinv2_tiny_window8_256", "timm model name"),
        "arch_kwargs": (
            {"img_size": img, "window_size": 4, "embed_dim": 32, "depths": [2, 2, 2, 2], "num_heads": [2, 4, 8, 16]},
            "a small Swin-V2 that trains on CPU",
        ),
        "head": ("arcface", "sub-centre ArcFace with adaptive margins + SoftmaxEQL"),
        "margin_max": (0.2, "the recipe's 0.5 slows learning from scratch"),
        **common,
        "resources": (None, ""),
    }
    vit = {
        "arch": ("vit_tiny_r_s16_p8_224", "ResNet stem + ViT: learns from scratch on CPU"),
        "arch_kwargs": ({"img_size": img, "patch_size": 2, "depth": 4}, "a small hybrid ViT"),
        "head": ("linear", "linear head, label smoothing, logit adjustment at inference"),
        "mixup_alpha": (0.0, "Mixup/CutMix off: too slow to learn from scratch in few epochs"),
        "cutmix_alpha": (0.0, "see mixup_alpha"),
        **common,
        "resources": (None, ""),
    }
    return {"swin_arc": (swin, "Swin-V2 family"), "vit_linear": (vit, "hybrid ViT family")}


def _gpu_models(pretrained_dir: Path) -> dict[str, tuple[dict, str]]:
    """The recipe's Swin-V2-B (ArcFace) and ViT-L (linear) fine-tuned from local checkpoints."""

    def ckpt(name):
        path = pretrained_dir / f"{name}.pth"
        if path.exists():
            return path.as_posix(), "local checkpoint to fine-tune from"
        return None, f"null: trains from scratch; put {path.as_posix()} here and set this to fine-tune (recommended)"

    swin = {
        "arch": ("swinv2_base_window12to24_192to384", "timm model name"),
        "arch_kwargs": ({"img_size": 384}, "fine-tuned at 384 px"),
        "pretrained_file": ckpt("swinv2_base_patch4_window12_192_22k"),
        "head": ("arcface", "sub-centre ArcFace with adaptive margins + SoftmaxEQL"),
        "img_size": (384, "train/test resolution (pixels)"),
        "epochs": (20, "passes over the training list per round"),
        "batch_size": (16, "images per GPU step"),
        "base_lr": (1.0e-4, "learning rate per 1,024 images"),
        "min_lr": (1.0e-5, "end of the cosine schedule"),
        "warmup_epochs": (2, "linear warm-up"),
        "warmup_lr_ratio": (1.0e-3, "warm-up starts at base_lr x this"),
        "drop_path": (0.2, "stochastic depth"),
        "test_crop_pct": (1.0, "resize to 384, no crop"),
        "soup_last": (5, "average the weights of the last N epochs"),
        "resources": (None, ""),
    }
    vit = {
        "arch": ("vit_large_patch16_224", "timm model name"),
        "arch_kwargs": (
            {"img_size": 448, "global_pool": "avg", "class_token": False, "fc_norm": True},
            "ViT-L/16 at 448 px, average-pooled tokens",
        ),
        "pretrained_file": ckpt("mae_vit_large_train_testa_1600e"),
        "head": ("linear", "linear head, label smoothing, Mixup/CutMix, logit adjustment"),
        "img_size": (448, "train/test resolution (pixels)"),
        "epochs": (30, "passes over the training list per round"),
        "batch_size": (16, "images per GPU step"),
        "base_lr": (1.0e-3, "learning rate per 1,024 images"),
        "min_lr": (1.0e-6, "end of the cosine schedule"),
        "warmup_epochs": (5, "linear warm-up"),
        "layer_decay": (0.75, "layer-wise lr decay for a pretrained ViT"),
        "drop_path": (0.1, "stochastic depth"),
        "test_crop_pct": (0.875, "short side 512, centre crop 448"),
        "resources": (None, ""),
    }
    return {"swinv2_b_arc": (swin, "Swin-V2-B family"), "vit_l_ce": (vit, "ViT-L family")}


def _resources(n_train: int, model: dict, gpu: bool) -> tuple[dict, str]:
    """GPUs, memory and a runtime estimate per training job, from the data size."""
    epochs = model["epochs"][0]
    if not gpu:
        minutes = math.ceil(n_train * epochs / 300 / 60 * 1.5) + 10  # ~300 img/s on a few cores
        return {"gpus": 0, "mem_mb": 8000, "runtime": minutes}, "CPU job; runtime with 50 % headroom"
    gpus = 8 if n_train > 200_000 else 4 if n_train > 50_000 else 1
    minutes = math.ceil(n_train * epochs / (60 * gpus) / 60 * 1.5) + 30  # ~60 img/s per GPU at 384-448 px
    return (
        {"gpus": gpus, "mem_mb": 32000 * gpus, "runtime": minutes},
        f"{gpus} GPU(s) for {n_train} images; runtime estimated at ~60 img/s per GPU, 50 % headroom",
    )


def build_config(report: DatasetReport, data_root: str, pretrained_dir: Path = Path("pretrained")) -> str:
    """The config YAML for ``report``, every key commented."""
    C, n = len(report.class_counts), report.num_train
    gpu = n >= GPU_TIER_IMAGES
    median_side = statistics.median(min(w, h) for w, h in report.sizes) if report.sizes else 32
    models = _gpu_models(pretrained_dir) if gpu else _cpu_models(32 if median_side < 64 else 64)
    splits = list(report.test_counts)
    final_split = splits[-1]
    k = max(1, math.floor(0.9 * report.test_counts[final_split] / C))
    min_count = min(report.class_counts)
    val_fraction = 0.1 if n < 50_000 else 0.02
    val_min = 3 if min_count >= 10 else 1
    names = list(models)

    # rounds: r0, then one round per test split, each pseudo-labelling the splits so far
    rounds = [("r0", {"models": names}, "first training on the cleaned list; scores train for the noise filter")]
    for i, split in enumerate(splits):
        prev = rounds[-1][0]
        suffix = split.removeprefix("test")  # testa -> a1, testb -> b1 (the recipe's names)
        name = f"{suffix}1" if suffix.isalpha() and f"{suffix}1" not in {r for r, _, _ in rounds} else f"p{i + 1}"
        rounds.append(
            (
                name,
                {
                    "models": names,
                    "pseudo": {"from": prev, "splits": splits[: i + 1], "scheme": "fixed", "threshold": 0.45},
                },
                f"cleaned list + pseudo-labels of {prev} on {' + '.join(splits[: i + 1])}",
            )
        )
    last = rounds[-1][0]

    out = [
        f"# webfg config written by `webfg init {data_root}` for {C} classes, {n} training images,",
        f"# test splits {', '.join(f'{s} ({c})' for s, c in report.test_counts.items())}.",
        f"# {'GPU tier: the recipe' + chr(39) + 's pretrained families' if gpu else 'CPU tier: two small models trained from scratch'} "
        f"(threshold {GPU_TIER_IMAGES} training images). Run: snakemake --configfile <this file>",
        "# Every key: config/README.md and workflow/schemas/config.schema.yaml.",
        "",
        "data:  # where the images are",
        f"  root: {_yaml(data_root)}  # the dataset (ACCV layout), relative to where snakemake runs",
        f"  num_classes: {C}  # class ids 0..{C - 1}; names by id in results/clean/classes.tsv",
        f"  test_splits: {_yaml(splits)}  # unlabelled flat folders, predicted by every round",
        "  meta_all: null  # null: scan train/ (or the original's annotation list, paths relative to train/)",
        "  answers: null  # answer-key folder (<split>.txt) if you have one: scores every round",
        "",
        "demo:  # the embedded demo dataset (off for your data)",
        "  build: false  # this is your own data, not the embedded demo",
        "",
        "clean:  # clean_split and the model-based noisy-label filter",
        f"  val_fraction: {val_fraction}  # share of each class held out to measure every model",
        f"  val_min_per_class: {val_min}  # at least this many val images per class (one always stays in train)",
        "  seed: 0  # seed of the stratified split",
        "  noise_filter:  # after the first round",
        "    enabled: true  # drop training samples the first round's ensemble finds implausible",
        "    round: r0  # the round whose ensemble scores the training list",
        "    max_label_prob: 0.05  # remove when the given label gets less than this ...",
        "    min_top_prob: 0.5  # ... and another class at least this",
        "",
        "models:  # name -> hyper-parameters (webfg.config.ModelConfig) and resources",
    ]
    for mname, (fields, what) in models.items():
        out.append(f"  {mname}:  # {what}")
        for key, (value, comment) in fields.items():
            if key == "resources":
                value, comment = _resources(n, fields, gpu)
                out.append(f"    resources:  # {comment}")
                out.append(f"      gpus: {value['gpus']}  # GPUs per training/inference job")
                out.append(f"      mem_mb: {value['mem_mb']}  # memory per job (MB)")
                out.append(f"      runtime: {value['runtime']}  # minutes per training job")
            else:
                out.append(f"    {key}: {_yaml(value)}  # {comment}")
    out += ["", "rounds:  # in pipeline order; each is a target: snakemake round_<name>"]
    for rname, spec, comment in rounds:
        out.append(f"  {rname}:  # {comment}")
        out.append(f"    models: {_yaml(spec['models'])}  # models trained in this round")
        if "pseudo" in spec:
            p = spec["pseudo"]
            out.append("    pseudo:  # test images added to the training list with their predicted class")
            out.append(f"      from: {p['from']}  # the round whose ensemble makes them")
            out.append(f"      splits: {_yaml(p['splits'])}  # test splits to pseudo-label")
            out.append(
                f"      scheme: {p['scheme']}  # fixed = the recipe's; class-aware: adaptive, balanced (config/README.md)"
            )
            out.append(f"      threshold: {p['threshold']}  # keep an image when its top probability is above this")
    out += [
        "",
        "final:  # the submission",
        f"  split: {final_split}  # the submitted test split",
        f"  members: {_yaml([[last, m] for m in names])}  # [round, model] pairs of the final ensemble",
        "  power: 25  # weights (val acc / min val acc)^power; 0 = plain mean",
        "  redistribute:  # towards balanced class counts",
        "    method: greedy  # balance predicted class counts (assumes a roughly balanced test split); none = argmax",
        f"    k: {k}  # a little below {report.test_counts[final_split]} images / {C} classes",
        "",
    ]
    return "\n".join(out)


def check_config_text(text: str) -> dict:
    """The written config must pass the workflow's own schema and model checks."""
    import jsonschema

    from webfg.config import ModelConfig

    config = yaml.safe_load(text)
    schema_path = Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml"
    if schema_path.exists():  # in a checkout (the editable install); skipped in a bare wheel
        jsonschema.validate(config, yaml.safe_load(schema_path.read_text(encoding="utf-8")))
    for name, entry in config["models"].items():
        ModelConfig.from_dict({k: v for k, v in entry.items() if k != "resources"}, where=f"models.{name}")
    return config


def init(data_dir, out, test_splits=None, force: bool = False, allow_broken: bool = False, log=print) -> dict:
    """Inspect ``data_dir``, print what was found, write the config to ``out`` (atomically)."""
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: exists; pass --force to overwrite it (nothing written)")
    report = inspect_dataset(data_dir, test_splits, allow_broken)
    log(report.summary())
    text = build_config(report, str(data_dir))
    config = check_config_text(text)
    write_text(out, text)
    log(
        f"wrote {out}: {len(config['models'])} models, rounds {', '.join(config['rounds'])}; "
        f"run: snakemake --configfile {out}"
    )
    return config
