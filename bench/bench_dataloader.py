"""Data loading at the recipe's resolution: images/s per loader worker, decoding real JPEGs.

    python bench/bench_dataloader.py                  # 240 JPEGs, 448 px, workers 0 1 2
    python bench/bench_dataloader.py --size 384       # the Swin-V2 resolution

The JPEGs are web-photo-like (about 500x375, quality 90, smooth content plus noise, like
the ACCV images); decoding, RandomResizedCrop to the training size, RandAugment m9 and
random erasing are timm's transforms as the training uses them (webfg.data). The printout
ends with the workers a GPU needs at a given training speed (--gpu-rate images/s/GPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_workflow import environment
from PIL import Image


def make_jpegs(root: Path, n: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        low = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((500, 375), Image.BICUBIC)
        noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 12, (375, 500, 3))
        rel = f"train/{i % 10:04d}/{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(root / rel, quality=90)
        samples.append((rel, i % 10))
    return samples


def rate(dataset, workers: int, batch: int, repeats: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    next(iter(loader))  # start-up (worker spawn) is not throughput
    seen, t0 = 0, time.perf_counter()
    for _ in range(repeats):
        for x, _ in loader:
            seen += len(x)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=240)
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--gpu-rate",
        type=float,
        default=100.0,
        help="training images/s of one GPU (ViT-L/448 bf16 on an A100 is of this order)",
    )
    a = p.parse_args()
    from webfg.config import ModelConfig
    from webfg.data import ImageList, eval_transform, train_transform

    torch.set_num_threads(1)
    print(environment())
    cfg = ModelConfig.from_dict({"arch": "vit_large_patch16_224", "img_size": a.size})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        samples = make_jpegs(root, a.images)
        kb = sum((root / r).stat().st_size for r, _ in samples) / len(samples) / 1024
        print(
            f"{a.images} JPEGs, 500x375, {kb:.0f} KiB each; training size {a.size}, RandAugment "
            f"{cfg.randaugment}, random erasing {cfg.random_erasing}"
        )
        per_worker = None
        for name, transform in (("train", train_transform(cfg)), ("eval", eval_transform(cfg))):
            for w in a.workers:
                r = rate(ImageList(root, samples, transform), w, 16, a.repeats)
                label = "in the training process" if w == 0 else f"{w} worker(s)"
                print(f"{name:5s} transform, {label:24s}: {r:6.1f} img/s ({r / max(w, 1):.1f} per worker)")
                if name == "train" and w == 1:
                    per_worker = r
    if per_worker:
        print(
            f"one worker decodes + augments {per_worker:.0f} img/s at {a.size} px: a GPU training at "
            f"{a.gpu_rate:.0f} img/s needs >= {a.gpu_rate / per_worker:.1f} workers (cores) of this CPU, "
            f"i.e. set num_workers to about {int(np.ceil(a.gpu_rate / per_worker)) + 1} and cpus_per_gpu above that"
        )


if __name__ == "__main__":
    main()
