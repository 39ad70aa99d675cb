"""clean_split: ingest the ACCV layout, drop what cannot be trained on, split off val.

Layout under the data root: ``train/<class>/<image>``, where the class folders are
integer ids (``0000``…) or all names (``cat``, ``dog``: numbered in sorted order and
listed in ``classes.tsv``, which maps ids back to folder names),
flat folders for each test split (``testa/``, ``testb/``), optionally ``meta/all.txt``
(the original's annotation list: paths relative to ``train/``). All lists written
here use paths relative to the data root.

Then the model-based noisy-label filter (``filter_noisy``): a first round of models
scores the training list, and samples whose given label the ensemble finds
implausible are removed.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from webfg.io import InputError, read_split_list, write_split_list, write_text
from webfg.progress import progress

DUPLICATE_OF = "duplicate of "  # removed.tsv reason prefix, followed by the kept path


def class_ids(names: list[str], where: Path) -> dict[str, int]:
    """Class folder name → id: integer names are their own ids (the ACCV layout); folders
    named by words are numbered 0..C-1 in sorted order. A mix of both is refused."""
    numeric = [n for n in names if n.isdigit()]
    if len(numeric) == len(names):
        return {n: int(n) for n in names}
    if numeric:
        words = [n for n in names if not n.isdigit()]
        raise InputError(f"{where}: class folders mix integer ids ({numeric[0]}, ...) and names "
                         f"({words[0]}, ...); expected all ids (0000, 0001, ...) or all names")
    return {n: i for i, n in enumerate(sorted(names))}


def image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def scan_train(root: Path) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """``train/<class>/<file>`` → ([(relpath, id)] sorted, {folder name: id}).
    Every class folder must hold a file."""
    train = root / "train"
    if not train.is_dir():
        raise InputError(f"{train}: no train/ folder (expected train/<class id>/<image>)")
    folders = sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{train}: no class folders")
    ids = class_ids([p.name for p in folders], train)
    samples = []
    for class_dir in folders:
        files = image_files(class_dir)
        if not files:
            raise InputError(f"{class_dir}: empty class (no image files)")
        samples += [(f.relative_to(root).as_posix(), ids[class_dir.name]) for f in files]
    return sorted(samples), ids


def scan_test_split(root: Path, split: str) -> list[str]:
    """Flat folder of a test split → sorted relpaths; an empty or missing split is an error."""
    folder = root / split
    if not folder.is_dir():
        raise InputError(f"{folder}: test split folder not found")
    files = [f.relative_to(root).as_posix() for f in image_files(folder)]
    if not files:
        raise InputError(f"{folder}: test split has no images")
    return files


def decode_error(data: bytes) -> str | None:
    """Why these bytes are not a usable image, or None. Decodes fully (catches truncation)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im.convert("RGB")
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")
    return None


def clean_split(
    root,
    out_dir,
    num_classes: int | None = None,
    val_fraction: float = 0.1,
    val_min_per_class: int = 1,
    seed: int = 0,
    meta_all=None,
    test_splits=(),
    log=print,
) -> dict:
    """Write all.txt, train.txt, val.txt, removed.tsv and <split>.txt per test split.

    Undecodable images and exact duplicates (same bytes) are removed; a duplicate
    carrying two different labels is removed entirely, as neither label can be trusted.
    Returns counts for the log and the report.
    """
    root, out_dir = Path(root), Path(out_dir)
    if meta_all:
        listed = read_split_list(meta_all, num_classes)
        samples = [("train/" + p, y) for p, y in listed]
    else:
        samples, _ = scan_train(root)
    labels = [y for _, y in samples]
    if num_classes is None:
        num_classes = max(labels) + 1
    elif max(labels) >= num_classes:
        bad = next(p for p, y in samples if y >= num_classes)
        raise InputError(f"{root / bad}: class id {max(labels)} out of range [0, {num_classes}) (data.num_classes)")
    present = set(labels)
    missing = [c for c in range(num_classes) if c not in present]
    if missing:
        raise InputError(f"{root / 'train'}: empty class(es) {missing[:10]} (no images); "
                         f"expected ids 0..{num_classes - 1}")

    removed: list[tuple[str, str]] = []
    by_hash: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for relpath, label in progress(samples, desc="clean_split: decode train", unit="img"):
        path = root / relpath
        try:
            data = path.read_bytes()
        except OSError as e:
            removed.append((relpath, f"unreadable: {e.strerror}"))
            continue
        err = decode_error(data)
        if err:
            removed.append((relpath, f"undecodable: {err}"))
            continue
        by_hash[hashlib.sha256(data).hexdigest()].append((relpath, label))

    kept = []
    for group in by_hash.values():
        first = group[0]
        if len({y for _, y in group}) > 1:
            others = ", ".join(f"{p} ({y})" for p, y in group)
            removed += [(p, f"conflicting labels among identical files: {others}") for p, _ in group]
            continue
        kept.append(first)
        removed += [(p, f"{DUPLICATE_OF}{first[0]}") for p, _ in group[1:]]
    kept.sort()

    rng = np.random.default_rng(seed)
    per_class: dict[int, list[str]] = defaultdict(list)
    for relpath, label in kept:
        per_class[label].append(relpath)
    train, val = [], []
    for label in sorted(per_class):
        paths = per_class[label]
        order = rng.permutation(len(paths))
        n_val = min(max(val_min_per_class, round(val_fraction * len(paths))), len(paths) - 1)
        val += [(paths[i], label) for i in order[:n_val]]
        train += [(paths[i], label) for i in order[n_val:]]
    empty_after = sorted(set(range(num_classes)) - {y for _, y in train})
    if empty_after:
        log(f"warning: classes {empty_after[:10]} have no training image left after cleaning")

    tests = {s: scan_test_split(root, s) for s in test_splits}
    for split, relpaths in tests.items():
        for relpath in progress(relpaths, desc=f"clean_split: decode {split}", unit="img"):
            err = decode_error((root / relpath).read_bytes())
            if err:
                raise InputError(f"{root / relpath}: unreadable test image ({err})")

    write_split_list(out_dir / "all.txt", samples)
    write_split_list(out_dir / "train.txt", sorted(train))
    write_split_list(out_dir / "val.txt", sorted(val))
    write_removed(out_dir / "removed.tsv", removed)
    for split, relpaths in tests.items():
        write_split_list(out_dir / f"{split}.txt", relpaths)
    stats = {"found": len(samples), "train": len(train), "val": len(val), "removed": len(removed),
             "num_classes": num_classes, **{f"num_{s}": len(r) for s, r in tests.items()}}
    log(" ".join(f"{k}={v}" for k, v in stats.items()))
    return stats


def write_class_list(root, path, num_classes: int | None = None, meta_all=None) -> list[str]:
    """``id<TAB>name`` for every class: the class folder's name (ids as clean_split gives
    them), or the 4-digit id when the classes come from a meta list. The submission maps
    ids back to names with it."""
    if meta_all:
        labels = [y for _, y in read_split_list(meta_all, num_classes)]
        names = [f"{c:04d}" for c in range(num_classes or max(labels) + 1)]
    else:
        train = Path(root) / "train"
        if not train.is_dir():
            raise InputError(f"{train}: no train/ folder (expected train/<class id>/<image>)")
        folders = [p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")]
        ids = class_ids(folders, train)
        names = sorted(ids, key=ids.get)
        if num_classes is not None and len(names) != num_classes:
            raise InputError(f"{train}: {len(names)} class folders, data.num_classes is {num_classes}")
    write_text(path, "id\tname\n" + "".join(f"{c}\t{n}\n" for c, n in enumerate(names)))
    return names


def read_classes(path) -> list[str]:
    """Class names by id, from ``classes.tsv``."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "id\tname":
        raise InputError(f"{path}:1: expected header 'id<TAB>name'")
    names = []
    for lineno, line in enumerate(lines[1:], 2):
        parts = line.split("\t")
        if len(parts) != 2 or parts[0] != str(len(names)):
            raise InputError(f"{path}:{lineno}: expected '{len(names)}<TAB><name>'")
        names.append(parts[1])
    return names


def write_removed(path, rows) -> None:
    write_text(path, "path\treason\n" + "".join(f"{p}\t{r}\n" for p, r in rows))


def filter_noisy(
    train_list,
    probs: np.ndarray,
    relpaths: list[str],
    out_list,
    out_removed,
    max_label_prob: float = 0.05,
    min_top_prob: float = 0.5,
    log=print,
) -> dict:
    """Drop a training sample when the scoring ensemble gives its label a probability
    below ``max_label_prob`` while another class gets at least ``min_top_prob``.

    ``probs``/``relpaths`` are the ensemble's prediction on the training list (any order).
    """
    samples = read_split_list(train_list)
    row_of = {p: i for i, p in enumerate(relpaths)}
    missing = [p for p, _ in samples if p not in row_of]
    if missing:
        raise InputError(f"{train_list}: {missing[0]} has no row in the scoring prediction")
    rows = np.array([row_of[p] for p, _ in samples], dtype=np.int64)
    labels = np.array([y for _, y in samples], dtype=np.int64)
    label_prob = np.empty(len(samples), np.float32)
    top_prob = np.empty(len(samples), np.float32)
    top = np.empty(len(samples), np.int64)
    for start in progress(range(0, len(samples), 8192), desc="filter_noisy", unit="chunk"):  # bounded memory
        part = slice(start, start + 8192)
        block = np.asarray(probs[np.sort(rows[part])], dtype=np.float32)
        block = block[np.argsort(np.argsort(rows[part]))]  # back to sample order
        label_prob[part] = block[np.arange(len(block)), labels[part]]
        top[part] = block.argmax(1)
        top_prob[part] = block.max(1)
    implausible = (label_prob < max_label_prob) & (top != labels) & (top_prob >= min_top_prob)
    kept = [s for s, bad in zip(samples, implausible) if not bad]
    removed = [(p, f"implausible label {y}: p={label_prob[i]:.3f}, ensemble says {top[i]} (p={top_prob[i]:.3f})")
               for i, ((p, y), bad) in enumerate(zip(samples, implausible)) if bad]
    write_split_list(out_list, kept)
    write_removed(out_removed, removed)
    log(f"noise filter: kept {len(kept)}, removed {len(removed)} of {len(samples)}")
    return {"kept": len(kept), "removed": len(removed)}
