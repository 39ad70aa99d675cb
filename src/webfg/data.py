"""Image datasets over split lists, and the timm transforms of the recipe."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from webfg.config import ModelConfig
from webfg.images import open_rgb


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
        img = open_rgb(self.root / relpath)
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def seed_rngs(seed: int, device: torch.device | None = None) -> None:
    """Seed python's, numpy's and torch's CPU generators (and ``device``'s, if a GPU).

    Not ``torch.manual_seed``: without an initialised GPU it records a formatted stack
    trace for lazy seeding on every call (~0.2 ms), which per sample cost a fifth of
    the demo's training throughput.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy takes 32-bit seeds only
    torch.default_generator.manual_seed(seed)
    if device is not None and device.type == "cuda":
        torch.cuda.manual_seed(seed)


class SeededImageList(ImageList):
    """Training images whose augmentation is a function of (sample, seed) only.

    Items are fetched as ``dataset[(index, seed)]`` (see ``EpochSampler``): python's,
    numpy's and torch's global RNGs (timm's transforms draw from all three) are seeded
    per sample, so the images of a step do not depend on the number of loader workers
    or on where a run was interrupted and resumed.

    An image that cannot be read (truncated, corrupt, vanished) is reported on stderr
    and replaced by the next readable sample of the list: a bad file met hours into a
    run costs one warning, not the run.
    """

    max_skips = 32

    def __getitem__(self, item):
        index, seed = item
        for attempt in range(self.max_skips):
            i = (index + attempt) % len(self.samples)
            seed_rngs(seed)
            try:
                return super().__getitem__(i)
            except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad files
                print(
                    f"warning: skipping unreadable training image {self.root / self.samples[i][0]}: "
                    f"{type(e).__name__}: {e}",
                    file=sys.stderr,
                    flush=True,
                )
        raise OSError(f"{self.max_skips} consecutive unreadable images from {self.root / self.samples[index][0]} on")


class EpochSampler(torch.utils.data.Sampler):
    """This rank's ``(index, seed)`` items for one epoch, from a given position on.

    The epoch's order is a permutation drawn from ``(seed, epoch)``; with several ranks it
    is padded (by wrapping) to a multiple of the world size and dealt out round-robin, so
    every rank has the same number of batches. ``set_epoch(epoch, start_batch)`` resumes in
    the middle of an epoch: the RNG streams are derived from the position, so the position
    is the whole sampler state.

    With ``global_seeds`` a sample's seed derives from its place in the epoch's order, not
    from (rank, position): the same image gets the same crop (and MAE mask) whatever the
    number of processes, so N ranks x batch B draw exactly what one process x N·B draws.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        global_seeds: bool = False,
    ):
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.global_seeds = global_seeds
        self.epoch, self.start_batch = 0, 0

    @property
    def per_rank(self) -> int:
        return -(-self.n // self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def batch_len(self, batch: int) -> int:
        """Images in this rank's batch number ``batch`` (only the last can be short)."""
        return min(self.batch_size, self.per_rank - batch * self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        end = self.batches_per_epoch * self.batch_size if self.drop_last else self.per_rank
        return max(0, end - self.start_batch * self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)
        padded = self.per_rank * self.world_size
        if padded > self.n:
            order = torch.cat([order, order[: padded - self.n]])
        mine = order[self.rank :: self.world_size].tolist()
        start = self.start_batch * self.batch_size
        stop = self.batches_per_epoch * self.batch_size if self.drop_last else len(mine)
        for pos in range(start, stop):
            key = [pos * self.world_size + self.rank] if self.global_seeds else [self.rank, pos]
            sample_seed = int(np.random.SeedSequence([self.seed, self.epoch, *key]).generate_state(1)[0])
            yield mine[pos], sample_seed


def train_transform(cfg: ModelConfig):
    from timm.data import create_transform

    return create_transform(
        input_size=cfg.img_size,
        is_training=True,
        scale=cfg.crop_scale,
        hflip=cfg.hflip,
        auto_augment=cfg.randaugment,
        color_jitter=cfg.color_jitter or None,
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
