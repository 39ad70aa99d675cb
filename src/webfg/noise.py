"""Out-of-fold scoring for the noisy-label filter.

A model that trained on an image has memorised its label, wrong or not, so scoring the
training list with the round's own models (the recipe) finds few label errors. Here the
cleaned train + val images are split into k class-stratified folds; a small scorer model is
trained on k-1 folds and predicts the held-out one, so every image is scored by a model that
never saw it. The k held-out predictions are assembled into one probability matrix in the
standard prediction format, which ``webfg.clean.filter_noisy`` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from webfg.io import InputError, load_predictions, read_split_list, save_predictions, write_split_list, write_text

FOLDS_KEY = "clean.noise_filter.folds"


def assign_folds(labels, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) of every sample: within each class the samples are shuffled
    (seeded) and dealt round-robin from a random start, so each fold holds
    floor or ceil(n_c / k) of class c, and fold sizes differ by at most one per class.

    k must be at least 2 and at most the smallest class: a fold without a class would train a
    scorer that never saw it and mark all of that class as noise.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if k < 2:
        raise InputError(f"{FOLDS_KEY}: {k} folds; need at least 2 (one to train on, one to score)")
    classes, counts = np.unique(labels, return_counts=True)
    if len(labels) and k > counts.min():
        c = classes[counts.argmin()]
        raise InputError(
            f"{FOLDS_KEY}: {k} folds but class {c} has only {counts.min()} image(s) in train + val; "
            f"use at most {counts.min()} folds"
        )
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), np.int64)
    offset = 0
    for c in classes:  # sorted: the assignment depends only on the labels and the seed
        members = rng.permutation(np.flatnonzero(labels == c))
        folds[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)  # the next class starts where this one stopped: folds stay even overall
    return folds


def write_folds(
    train_list, val_list, out_dir, k: int, seed: int = 0, num_classes: int | None = None, log=print
) -> dict:
    """Split train + val into k folds: ``fold<i>.train.txt`` (what scorer i trains on),
    ``fold<i>.heldout.txt`` (what it scores) and ``folds.tsv`` (path, label, split, fold)."""
    out_dir = Path(out_dir)
    pooled = [(p, y, "train") for p, y in read_split_list(train_list, num_classes)]
    pooled += [(p, y, "val") for p, y in read_split_list(val_list, num_classes)]
    pooled.sort()
    seen = set()
    for p, _, split in pooled:
        if p in seen:
            raise InputError(f"{val_list if split == 'val' else train_list}: {p} is in both train and val lists")
        seen.add(p)
    folds = assign_folds([y for _, y, _ in pooled], k, seed)
    for f in range(k):
        write_split_list(out_dir / f"fold{f}.train.txt", [(p, y) for (p, y, _), g in zip(pooled, folds) if g != f])
        write_split_list(out_dir / f"fold{f}.heldout.txt", [(p, y) for (p, y, _), g in zip(pooled, folds) if g == f])
    write_text(
        out_dir / "folds.tsv",
        "path\tlabel\tsplit\tfold\n" + "".join(f"{p}\t{y}\t{s}\t{g}\n" for (p, y, s), g in zip(pooled, folds)),
    )
    sizes = np.bincount(folds, minlength=k).tolist()
    log(f"noise folds: {len(pooled)} images (train + val) in {k} folds of {sizes}")
    return {"images": len(pooled), "fold_sizes": sizes}


def assemble_out_of_fold(heldout_stems, out_stem) -> int:
    """Stack the held-out predictions of the k fold scorers into one prediction (rows sorted by
    path). An image scored twice, or a fold of another class count, is refused."""
    parts = [load_predictions(s, mmap=False) for s in heldout_stems]
    if not parts:
        raise InputError(f"{out_stem}: no fold predictions to assemble")
    width = parts[0][0].shape[1]
    rows: dict[str, tuple[int, int]] = {}
    for i, (probs, relpaths, _) in enumerate(parts):
        if probs.shape[1] != width:
            raise InputError(f"{heldout_stems[i]}: {probs.shape[1]} classes, {heldout_stems[0]} has {width}")
        for r, p in enumerate(relpaths):
            if p in rows:
                raise InputError(f"{heldout_stems[i]}: {p} is also held out by {heldout_stems[rows[p][0]]}")
            rows[p] = (i, r)
    order = sorted(rows)
    probs = np.stack([parts[rows[p][0]][0][rows[p][1]] for p in order]).astype(np.float32)
    meta = {
        "model": "out-of-fold",
        "split": "train",  # train + val images, all under train/
        "scored": "out of fold: each image by the scorer that did not train on it",
        "folds": [str(s) for s in heldout_stems],
        "fold_val_accuracy": [m.get("val_accuracy") for _, _, m in parts],
    }
    save_predictions(out_stem, probs, order, meta)
    return len(order)
