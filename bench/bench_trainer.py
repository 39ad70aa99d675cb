"""Trainer overhead: webfg's training loop vs a bare timm loop, same model, batch and augmentation.

    python bench/bench_trainer.py                 # demo ViT, 2 x 2 alternating runs
    python bench/bench_trainer.py --arch swin     # the demo's Swin-V2 with the ArcFace head

Both sides train on the same synthetic 32 px images with the demo model's settings; webfg's
side is ``webfg.train.train`` (its images/s excludes validation, as the bare loop has none);
the bare side is DataLoader + timm model + AdamW + loss.backward + step, nothing else. Runs
alternate (ours, bare, ours, bare, ...) so drifting machine load hits both. Target: ours >=
0.95x bare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_workflow import environment
from PIL import Image

MODELS = {
    "vit": dict(
        arch="vit_tiny_r_s16_p8_224",
        arch_kwargs={"img_size": 32, "patch_size": 2, "depth": 4},
        head="linear",
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
    ),
    "swin": dict(
        arch="swinv2_tiny_window8_256",
        head="arcface",
        arch_kwargs={
            "img_size": 32,
            "window_size": 4,
            "embed_dim": 32,
            "depths": [2, 2, 2, 2],
            "num_heads": [1, 2, 4, 8],
        },
    ),
}
COMMON = dict(
    img_size=32,
    epochs=1,
    batch_size=64,
    base_lr=0.016,
    warmup_epochs=0,
    hflip=0.0,
    randaugment=None,
    crop_scale=[0.6, 1.0],
    test_crop_pct=1.0,
    mean=[0.5] * 3,
    std=[0.5] * 3,
    drop_path=0.1,
)


def make_images(root: Path, n: int, classes: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        c = i % classes
        rel = f"train/{c:04d}/{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / rel)
        samples.append((rel, c))
    return samples


def ours(cfg, root, train_list, val_list, classes, out) -> float:
    from webfg.train import train

    history = []
    train(cfg, root, train_list, val_list, classes, out, threads=torch.get_num_threads(), log=lambda m: None)
    import csv

    with open(Path(out).with_suffix(".history.tsv")) as f:
        history = list(csv.DictReader(f, delimiter="\t"))
    return statistics.mean(float(h["images_per_s"]) for h in history)


def bare(cfg, root, samples, classes) -> float:
    import timm
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    from webfg.data import ImageList, train_transform
    from webfg.heads import SubCenterArcFace, adaptive_margins

    torch.manual_seed(0)
    if cfg.head == "linear":
        model, head = (
            timm.create_model(cfg.arch, num_classes=classes, drop_path_rate=cfg.drop_path, **cfg.arch_kwargs),
            None,
        )
        params = list(model.parameters())
    else:
        model = timm.create_model(cfg.arch, num_classes=0, drop_path_rate=cfg.drop_path, **cfg.arch_kwargs)
        head = SubCenterArcFace(model.num_features, classes, adaptive_margins(torch.ones(classes)))
        params = list(model.parameters()) + list(head.parameters())
    opt = create_optimizer_v2(params, opt="adamw", lr=1e-3, weight_decay=0.05)
    criterion = LabelSmoothingCrossEntropy(0.1) if head is None else torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(
        ImageList(root, samples, train_transform(cfg)), batch_size=cfg.batch_size, shuffle=True
    )
    model.train()
    seen, t0 = 0, time.perf_counter()
    for _ in range(cfg.epochs):
        for x, y in loader:
            logits = model(x) if head is None else head(model(x), y)
            loss = criterion(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", choices=sorted(MODELS), default="vit")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--pairs", type=int, default=2)
    a = p.parse_args()
    from webfg.config import ModelConfig
    from webfg.io import write_split_list

    print(environment())
    cfg = ModelConfig.from_dict({**COMMON, **MODELS[a.arch], "epochs": a.epochs})
    classes = 30
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        samples = make_images(root, a.images, classes)
        write_split_list(root / "train.txt", samples)
        write_split_list(root / "val.txt", samples[:classes])
        rates = {"webfg": [], "bare timm": []}
        for i in range(a.pairs):
            rates["webfg"].append(ours(cfg, root, root / "train.txt", root / "val.txt", classes, root / f"m{i}.pt"))
            rates["bare timm"].append(bare(cfg, root, samples, classes))
            print(f"pair {i + 1}: webfg {rates['webfg'][-1]:.0f} img/s, bare timm {rates['bare timm'][-1]:.0f} img/s")
    ratio = statistics.median(rates["webfg"]) / statistics.median(rates["bare timm"])
    print(
        f"{a.arch} ({cfg.arch}, {cfg.head}), batch {cfg.batch_size}, {a.images} images x {a.epochs} epoch(s), "
        f"{torch.get_num_threads()} threads: webfg {statistics.median(rates['webfg']):.0f} img/s vs bare timm "
        f"{statistics.median(rates['bare timm']):.0f} img/s -> ratio {ratio:.3f} (target >= 0.95)"
    )


if __name__ == "__main__":
    main()
