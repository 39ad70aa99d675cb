"""Image datasets over split lists, and the timm transforms of the recipe."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from webfg.config import ModelConfig


class ImageList(torch.utils.data.Dataset):
    """Samples ``[(relpath, label)]`` (or ``[relpath]``, label −1) under ``root``; RGB PIL → transform."""

    def __init__(self, root, samples, transform=None):
        self.root = Path(root)
        self.samples = [s if isinstance(s, tuple) else (s, -1) for s in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        relpath, label = self.samples[i]
        with Image.open(self.root / relpath) as im:
            img = im.convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def train_transform(cfg: ModelConfig):
    from timm.data import create_transform

    return create_transform(
        input_size=cfg.img_size,
        is_training=True,
        scale=cfg.crop_scale,
        hflip=cfg.hflip,
        auto_augment=cfg.randaugment,
        re_prob=cfg.random_erasing,
        re_mode="pixel",
        interpolation="bicubic",
        mean=cfg.mean,
        std=cfg.std,
    )


def eval_transform(cfg: ModelConfig):
    from timm.data import create_transform

    return create_transform(
        input_size=cfg.img_size,
        is_training=False,
        crop_pct=cfg.test_crop_pct,
        interpolation="bicubic",
        mean=cfg.mean,
        std=cfg.std,
    )
