"""Synthetic test-set predictions of M models with known labels, at any scale.

Shaped like the challenge's test-B (N/C = 18) and its 17-model ensemble:
  * errors among similar classes: classes come in groups of ``GROUP`` neighbours; each
    row's candidates are its true class's group plus a few random distractors, and a
    per-row latent shared by every model (what the image looks like) decides which
    neighbour is confusable -- so models make correlated mistakes, as real ones do;
  * model-specific errors: models come in architecture families (the 17 are 5 + 5 + 4 + 3,
    ViT-L CE / ViT-L ArcFace / Swin-L / Swin-B) that share a family noise, plus private noise;
  * a long-tailed training prior (a random Zipf-like one, also drawn as the training set's
    class counts, ``train_counts``): model m adds ``bias_m * log prior_train[c]`` to its
    logits with its OWN strength bias_m (uniform in [bias_low, bias_high]): the bias a
    balanced test set exposes, which the ensemble averages but does not remove;
  * a per-row difficulty and per-model noise and skill, calibrated so single models sit
    near 0.70-0.76 top-1 and the 17-model mean near 0.78 (the published numbers).
Test labels: exactly balanced (N/C per class), i.i.d. uniform, or i.i.d. from a lognormal
class prior (``lognormal``, sigma 0.15); val labels follow the training prior.
Rows are dense float16 probabilities (every non-candidate class shares a small
background mass), generated block by block from seeds derived from (seed, block), so
any scale streams to disk in bounded memory and the same seed gives the same bytes.

    python bench/synth.py --out /tmp/synth --models 17 --rows 90000 --classes 5000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

GROUP = 10  # similar classes per group
DISTRACTORS = 6  # random other classes among a row's candidates
BLOCK = 2048  # rows generated at a time
BACKGROUND = 0.02  # total probability mass outside the candidates (before the softmax)


class Synth:
    """The generative model; ``labels(prior)`` and ``block(model, rows, labels)``."""

    def __init__(
        self,
        num_models: int,
        num_rows: int,
        num_classes: int,
        seed: int = 0,
        signal: float = 3.7,
        difficulty: float = 1.6,
        shared: float = 1.2,
        noise: float = 0.5,
        family_noise: float = 0.5,
        bias_low: float = 0.15,
        bias_high: float = 0.75,
        zipf: float = 1.0,
        train_per_class: int = 110,
        skill=(0.95, 1.05),
    ):
        if num_classes < 2 * GROUP:
            raise ValueError(f"need at least {2 * GROUP} classes")
        self.m, self.n, self.c, self.seed = num_models, num_rows, num_classes, seed
        self.signal, self.difficulty, self.shared, self.noise = signal, difficulty, shared, noise
        self.family_noise = family_noise
        rng = np.random.default_rng([seed, 0])
        prior = 1.0 / np.arange(1, num_classes + 1) ** zipf
        self.prior_train = rng.permutation(prior / prior.sum())
        self.log_prior_train = np.log(self.prior_train * num_classes).astype(np.float32)
        self.train_counts = rng.multinomial(train_per_class * num_classes, self.prior_train)
        if isinstance(skill, tuple):
            self.skill = rng.uniform(*skill, num_models).astype(np.float32)  # spreads single accuracies
        else:
            self.skill = np.asarray(skill, dtype=np.float32)
        self.bias = rng.uniform(bias_low, bias_high, num_models).astype(np.float32)
        sizes = np.maximum(1, np.round(np.array([5, 5, 4, 3]) * num_models / 17).astype(int))
        self.family = np.minimum(np.repeat(np.arange(4), sizes)[:num_models], 3)
        if self.family.size < num_models:
            self.family = np.concatenate([self.family, np.full(num_models - self.family.size, 3)])

    PRIORS = ("balanced", "iid", "lognormal", "train")

    def labels(self, prior: str, n: int | None = None) -> np.ndarray:
        """True labels: ``balanced`` = exactly N/C per class (shuffled), ``iid`` = i.i.d. uniform,
        ``lognormal`` = i.i.d. from a class prior exp(0.15 z), ``train`` = i.i.d. from the
        training prior (a val split)."""
        n = self.n if n is None else n
        rng = np.random.default_rng([self.seed, 1, self.PRIORS.index(prior)])
        if prior == "balanced":
            return rng.permutation(np.arange(n) % self.c)
        if prior == "iid":
            return rng.integers(0, self.c, n)
        if prior == "lognormal":
            w = np.exp(0.15 * rng.normal(size=self.c))
            return rng.choice(self.c, n, p=w / w.sum())
        if prior == "train":
            return rng.choice(self.c, n, p=self.prior_train)
        raise ValueError(f"prior must be one of {self.PRIORS}, got {prior!r}")

    def _shared(self, start: int, labels: np.ndarray):
        """Candidates and the per-row latents every model shares, for rows start.. of one block
        (a val split uses negative starts: other rows, same models)."""
        rng = np.random.default_rng([self.seed, 2, start + 2**40])
        b = labels.size
        group = (labels // GROUP * GROUP)[:, None] + np.arange(GROUP)
        group = np.where(group < self.c, group, group - GROUP)  # a last, partial group borrows
        # distinct distractors: one in each of DISTRACTORS equal windows of the other classes
        window = (self.c - GROUP) // DISTRACTORS
        others = (
            rng.integers(0, self.c - GROUP, (b, 1))
            + np.arange(DISTRACTORS) * window
            + rng.integers(0, window, (b, DISTRACTORS))
        ) % (self.c - GROUP)
        others = np.where(others >= group[:, :1], others + GROUP, others)  # outside the true group
        cand = np.concatenate([group, others], axis=1)
        latent = rng.normal(0, self.shared, cand.shape).astype(np.float32)
        latent[:, GROUP:] -= 1.0  # distractors: less similar than the group
        strength = np.maximum(rng.normal(self.signal, self.difficulty, (b, 1)), 0).astype(np.float32)
        return cand, latent, strength

    def block(self, model: int, start: int, labels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """float16 probabilities (len(labels), C) of ``model`` for rows start.. with true ``labels``."""
        cand, latent, strength = self._shared(start, labels)
        rng = np.random.default_rng([self.seed, 3, model, start + 2**40])
        family = np.random.default_rng([self.seed, 4, int(self.family[model]), start + 2**40])
        z = latent + rng.normal(0, self.noise, cand.shape).astype(np.float32)
        z += family.normal(0, self.family_noise, cand.shape).astype(np.float32)
        z += self.bias[model] * self.log_prior_train[cand]
        z += (cand == labels[:, None]) * strength * self.skill[model]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        background = BACKGROUND * e.sum(axis=1) / (1 - BACKGROUND)  # total background mass
        total = e.sum(axis=1) + background
        out = np.empty((labels.size, self.c), dtype=np.float16) if out is None else out[: labels.size]
        out[:] = (background / (self.c - cand.shape[1]) / total)[:, None]
        np.put_along_axis(out, cand, (e / total[:, None]).astype(np.float16), axis=1)
        return out

    def write(self, out_dir, prior: str, log=print, val_rows: int = 0) -> list[Path]:
        """Write M prediction stems ``m<i>`` of the test split (SPEC C) + ``labels.txt``; with
        ``val_rows``, also ``m<i>.val`` stems of a val split drawn from the training prior
        (other rows, same models; its labelled list is ``val.txt``) and every member's
        val_accuracy measured there. Returns the test stems."""
        from webfg.io import write_split_list

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        labels = self.labels(prior)
        np.savetxt(out_dir / "labels.txt", labels, fmt="%d")
        rows = [f"testb/{i:06d}.jpg" for i in range(self.n)]
        val_acc = [None] * self.m
        if val_rows:
            val_labels = self.labels("train", val_rows)
            val_names = [f"train/val{i:06d}.jpg" for i in range(val_rows)]
            write_split_list(out_dir / "val.txt", list(zip(val_names, val_labels.tolist())))
            for model in range(self.m):
                val_acc[model] = self._write_stem(
                    out_dir / f"m{model:02d}.val", model, val_labels, val_names, -(2**39), None
                )
        stems = []
        for model in range(self.m):
            stem = out_dir / f"m{model:02d}"
            acc = self._write_stem(stem, model, labels, rows, 0, val_acc[model])
            log(f"{stem}.npy: top-1 {acc:.4f}")
            stems.append(stem)
        return stems

    def _write_stem(self, stem, model, labels, rows, first, val_accuracy) -> float:
        """One member's prediction files; returns its top-1 on ``labels`` (the val_accuracy
        recorded when none is given)."""
        from webfg.io import write_json, write_split_list
        from webfg.stream import write_npy_header

        buf = np.empty((BLOCK, self.c), dtype=np.float16)
        correct = 0
        n = labels.size
        with open(f"{stem}.npy", "wb") as f:
            write_npy_header(f, (n, self.c))
            for start in range(0, n, BLOCK):
                block = self.block(model, first + start, labels[start : start + BLOCK], buf)
                correct += int((block.argmax(axis=1) == labels[start : start + BLOCK]).sum())
                f.write(block.tobytes())
        write_split_list(f"{stem}.rows.txt", rows)
        acc = correct / n
        write_json(
            f"{stem}.json",
            {
                "model": Path(stem).name,
                "val_accuracy": acc if val_accuracy is None else val_accuracy,
                "num_rows": n,
                "num_classes": self.c,
            },
        )
        return acc


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True)
    p.add_argument("--models", type=int, default=17)
    p.add_argument("--rows", type=int, default=18000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--prior", default="balanced", choices=["balanced", "iid", "lognormal"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    Synth(a.models, a.rows, a.classes, a.seed).write(a.out, a.prior, log=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
