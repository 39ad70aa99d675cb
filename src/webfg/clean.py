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
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webfg.images import decode_error
from webfg.io import InputError, read_split_lines, read_split_list, write_split_list, write_text
from webfg.progress import progress

DUPLICATE_OF = "duplicate of "  # removed.tsv reason prefix, followed by the kept path


def class_ids(names: list[str], where: Path) -> dict[str, int]:
    """Class folder name → id: integer names are their own ids (the ACCV layout); folders
    named by words are numbered 0..C-1 in sorted order. A mix of both is refused."""
    numeric = [n for n in names if n.isascii() and n.isdigit()]
    if numeric and len(numeric) < len(names):
        words = [n for n in names if n not in set(numeric)]
        raise InputError(
            f"{where}: class folders mix integer ids ({numeric[0]}, ...) and names "
            f"({words[0]}, ...); expected all ids (0000, 0001, ...) or all names"
        )
    if numeric:
        first = {}
        for n in sorted(names):
            if int(n) in first:
                raise InputError(f"{where}: class folders {first[int(n)]} and {n} are both id {int(n)}")
            first[int(n)] = n
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(sorted(names))}


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def unlistable(name: str) -> str | None:
    """Why a file name cannot go into a split list (one path a line, UTF-8), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not UTF-8, cannot be listed; rename it"
    if any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name:
        return "name holds a line break, tab, control character or backslash, cannot be listed; rename it"
    return None


SYSTEM_FILES = {
    "thumbs.db": "Windows thumbnail cache",
    "ehthumbs.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
}


def image_files(folder: Path) -> list[Path]:
    """The files directly in ``folder`` that are read as images (not hidden files, not the
    system's Thumbs.db/desktop.ini, nor names a split list cannot hold)."""
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and not is_hidden(f.name) and f.name.lower() not in SYSTEM_FILES and not unlistable(f.name)
    )


def shown(path: Path, root: Path) -> str:
    """A relpath as removed.tsv can hold it (odd names escaped)."""
    rel = path.relative_to(root).as_posix()
    return rel if not unlistable(path.name) else ascii(rel)


def unread_files(root: Path, folder: Path, why_nested: str) -> list[tuple[str, str]]:
    """(relpath, reason) for what ``folder`` holds that is not read: hidden files, and every
    file in a sub-folder (which is not followed when it is a link)."""
    out = []
    for entry in sorted(folder.iterdir()):
        rel = shown(entry, root)
        if entry.is_dir():
            if entry.is_symlink():
                out.append((rel + "/", f"link to a folder, not followed; {why_nested}"))
                continue
            for dirpath, dirnames, filenames in sorted(os.walk(entry)):
                dirnames.sort()
                for name in sorted(filenames):
                    out.append((shown(Path(dirpath) / name, root), f"in sub-folder {rel}/: {why_nested}"))
                for name in dirnames:
                    if (Path(dirpath) / name).is_symlink():
                        out.append(
                            (shown(Path(dirpath) / name, root) + "/", f"link to a folder, not followed; {why_nested}")
                        )
        elif is_hidden(entry.name):
            out.append((rel, "hidden file, not read"))
        elif entry.name.lower() in SYSTEM_FILES:
            out.append((rel, f"{SYSTEM_FILES[entry.name.lower()]} ({entry.name}), not an image"))
        elif unlistable(entry.name):
            out.append((rel, unlistable(entry.name)))
        elif not entry.is_file():
            out.append((rel, "not a regular file (a broken link or a device), not read"))
    return out


@dataclass
class TrainTree:
    """What clean_split and class_list read from the data root, validated once.

    ``samples`` are [(relpath, id)] in the order listed (sorted for a scanned tree);
    ``names`` the class names by id; ``dropped`` [(relpath, reason)] for everything in
    train/ that is not a sample (loose files, sub-folders, hidden files): nothing the
    user put in the tree vanishes without a line in removed.tsv.
    """

    samples: list[tuple[str, int]]
    names: list[str]
    dropped: list[tuple[str, str]]

    @property
    def num_classes(self) -> int:
        return len(self.names)


def scan_tree(root, num_classes: int | None = None, meta_all=None) -> TrainTree:
    """The training samples of ``root`` (from ``train/<class>/`` or the ``meta_all`` list),
    their classes and what is not read; every layout problem raises InputError."""
    root = Path(root)
    if meta_all:
        lines = read_split_lines(meta_all, num_classes)
        if not lines:
            raise InputError(f"{meta_all}: no samples (empty list); expected lines '<path relative to train/> <label>'")
        first_line: dict[str, int] = {}
        for lineno, relpath, _ in lines:
            if relpath in first_line:
                raise InputError(
                    f"{meta_all}:{lineno}: {relpath} is listed again (first at line "
                    f"{first_line[relpath]}); each image once, with one label"
                )
            first_line[relpath] = lineno
        samples = [("train/" + p, y) for _, p, y in lines]
        line_of_label = {}
        for lineno, _, y in lines:
            line_of_label.setdefault(y, lineno)
        C = check_class_ids({y: f"{meta_all}:{n}" for y, n in line_of_label.items()}, num_classes, str(meta_all))
        return TrainTree(samples, [f"{c:04d}" for c in range(C)], [])

    train = root / "train"
    if not train.is_dir():
        raise InputError(f"{train}: no train/ folder (expected train/<class id>/<image>)")
    entries = sorted(train.iterdir())
    folders = [p for p in entries if p.is_dir() and not is_hidden(p.name) and not unlistable(p.name)]
    if not folders:
        raise InputError(f"{train}: no class folders (expected train/<class id>/<image>)")
    dropped = []
    for entry in entries:
        if entry in folders:
            continue
        rel = shown(entry, root)
        if unlistable(entry.name):
            dropped.append((rel, unlistable(entry.name)))
        elif entry.is_dir():
            dropped.append((rel + "/", "hidden folder, not read"))
        elif is_hidden(entry.name):
            dropped.append((rel, "hidden file, not read"))
        else:
            dropped.append((rel, "directly in train/, not in a class folder: no label"))
    ids = class_ids([p.name for p in folders], train)
    C = check_class_ids({i: str(train / n) for n, i in ids.items()}, num_classes, str(train))
    samples = []
    for class_dir in folders:
        files = image_files(class_dir)
        unread = unread_files(root, class_dir, f"images belong directly in train/{class_dir.name}/")
        if not files:
            extra = f"; not read: {unread[0][0]} ({unread[0][1]})" if unread else ""
            raise InputError(f"{class_dir}: empty class (no image files{extra})")
        samples += [(f.relative_to(root).as_posix(), ids[class_dir.name]) for f in files]
        dropped += unread
    return TrainTree(sorted(samples), sorted(ids, key=ids.get), dropped)


def check_class_ids(where_of: dict[int, str], num_classes: int | None, source: str) -> int:
    """The class count of the ids ``where_of`` (id → where it is used): ids must be
    0..C-1, every one used (C = ``num_classes``, or the largest id + 1). Builds nothing of
    size C, so a 23-digit id costs nothing."""
    top = max(where_of)
    if num_classes is not None and top >= num_classes:
        raise InputError(f"{where_of[top]}: class id {top} out of range [0, {num_classes}) (data.num_classes)")
    count = top + 1 if num_classes is None else num_classes
    if len(where_of) < count:
        missing = []
        c = 0
        while len(missing) < 10 and c < count:
            if c not in where_of:
                missing.append(c)
            c += 1
        implied = (
            f" (data.num_classes is {num_classes})"
            if num_classes is not None
            else f"; the largest id {top} ({where_of[top]}) implies {count} classes"
        )
        raise InputError(
            f"{source}: {count - len(where_of)} empty class(es) {missing}{', ...' if count - len(where_of) > 10 else ''} "
            f"(no images){implied}; expected ids 0..{count - 1}, each with images"
        )
    return count


def scan_test_split(root: Path, split: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Flat folder of a test split → (sorted relpaths, [(relpath, reason)] not read); an empty
    or missing split, or an image that links out of the data root, is an error."""
    folder = root / split
    if not folder.is_dir():
        raise InputError(f"{folder}: test split folder not found")
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: test split has no images")
    real_root = root.resolve()
    for f in files:
        if not f.resolve().is_relative_to(real_root):
            raise InputError(f"{f}: links out of the data root (to {f.resolve()}); every test image must lie inside it")
    unread = unread_files(root, folder, f"test split {split} is one flat folder; not predicted")
    return [f.relative_to(root).as_posix() for f in files], unread


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

    Undecodable images, images linked from outside the data root and exact duplicates
    (same bytes) are removed; a duplicate carrying two different labels is removed
    entirely, as neither label can be trusted. A class left without any image stops
    the run (naming why its files went). Everything is checked before anything is
    written. Returns counts for the log and the report.
    """
    root, out_dir = Path(root), Path(out_dir)
    tree = scan_tree(root, num_classes, meta_all)
    samples, num_classes = tree.samples, tree.num_classes
    tests = {s: scan_test_split(root, s) for s in test_splits}

    removed: list[tuple[str, str]] = list(tree.dropped)
    real_root = root.resolve()
    by_hash: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for relpath, label in progress(samples, desc="clean_split: decode train", unit="img"):
        path = root / relpath
        try:
            real = path.resolve()
            if not real.is_relative_to(real_root):
                removed.append((relpath, f"links out of the data root (to {real}): not used"))
                continue
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
    check_every_class_kept(kept, samples, removed, tree.names, meta_all or root / "train")

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

    for split, (relpaths, _) in tests.items():
        for relpath in progress(relpaths, desc=f"clean_split: decode {split}", unit="img"):
            err = decode_error((root / relpath).read_bytes())
            if err:
                raise InputError(f"{root / relpath}: unreadable test image ({err}); every test image must decode")
    for _, unread in tests.values():
        removed += unread

    write_split_list(out_dir / "all.txt", samples)
    write_split_list(out_dir / "train.txt", sorted(train))
    write_split_list(out_dir / "val.txt", sorted(val))
    write_removed(out_dir / "removed.tsv", removed)
    for split, (relpaths, _) in tests.items():
        write_split_list(out_dir / f"{split}.txt", relpaths)
    stats = {
        "found": len(samples),
        "train": len(train),
        "val": len(val),
        "removed": len(removed),
        "num_classes": num_classes,
        **{f"num_{s}": len(r) for s, (r, _) in tests.items()},
    }
    log(" ".join(f"{k}={v}" for k, v in stats.items()))
    return stats


def check_every_class_kept(kept, samples, removed, names, source) -> None:
    """A class whose every image was removed would train an empty head: stop, naming the
    class and why its files went."""
    left = {y for _, y in kept}
    empty = [c for c in range(len(names)) if c not in left]
    if not empty:
        return
    reason = dict(removed)
    parts = []
    for c in empty[:3]:
        files = [p for p, y in samples if y == c]
        why = "; ".join(f"{p}: {reason.get(p, 'removed')}" for p in files[:3])
        parts.append(
            f"class {c} ({names[c]}): all {len(files)} image(s) removed ({why}"
            + (", ..." if len(files) > 3 else "")
            + ")"
        )
    raise InputError(
        f"{source}: {len(empty)} class(es) left without any usable image, nothing written: "
        + " | ".join(parts)
        + (" | ..." if len(empty) > 3 else "")
    )


def write_class_list(root, path, num_classes: int | None = None, meta_all=None) -> list[str]:
    """``id<TAB>name`` for every class: the class folder's name (ids as clean_split gives
    them), or the 4-digit id when the classes come from a meta list. The submission maps
    ids back to names with it."""
    names = scan_tree(root, num_classes, meta_all).names
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
    val_list=None,
    out_val=None,
) -> dict:
    """Drop a sample when the scores give its label a probability below ``max_label_prob``
    while another class gets at least ``min_top_prob``.

    ``probs``/``relpaths`` are a prediction covering the training list (any order): the
    noise round's ensemble (in-sample, the recipe) or the out-of-fold scorers
    (``webfg.noise``), which also cover ``val_list``: it is then filtered the same way into
    ``out_val``. ``out_removed`` lists every removal: path, reason, split, label, label_prob,
    top_class, top_prob.
    """
    lists = [("train", train_list, out_list)] + ([("val", val_list, out_val)] if val_list is not None else [])
    row_of = {p: i for i, p in enumerate(relpaths)}
    removed, counts = [], {}
    for split, listing, out in lists:
        samples = read_split_list(listing)
        missing = [p for p, _ in samples if p not in row_of]
        if missing:
            raise InputError(f"{listing}: {missing[0]} has no row in the scoring prediction")
        label_prob, top, top_prob = label_scores(
            probs,
            np.array([row_of[p] for p, _ in samples], dtype=np.int64),
            np.array([y for _, y in samples], dtype=np.int64),
        )
        labels = np.array([y for _, y in samples], dtype=np.int64)
        implausible = implausible_labels(label_prob, top, top_prob, labels, max_label_prob, min_top_prob)
        kept = [s for s, bad in zip(samples, implausible) if not bad]
        removed += [
            (
                p,
                f"implausible label {y}: p={label_prob[i]:.3f}, ensemble says {top[i]} (p={top_prob[i]:.3f})",
                split,
                y,
                f"{label_prob[i]:.4g}",
                int(top[i]),
                f"{top_prob[i]:.4g}",
            )
            for i, ((p, y), bad) in enumerate(zip(samples, implausible))
            if bad
        ]
        write_split_list(out, kept)
        counts[split] = (len(kept), len(samples) - len(kept))
        log(f"noise filter ({split}): kept {len(kept)}, removed {len(samples) - len(kept)} of {len(samples)}")
    write_text(
        out_removed,
        "path\treason\tsplit\tlabel\tlabel_prob\ttop_class\ttop_prob\n"
        + "".join("\t".join(map(str, row)) + "\n" for row in removed),
    )
    return {
        "kept": counts["train"][0],
        "removed": counts["train"][1],
        **({"val_kept": counts["val"][0], "val_removed": counts["val"][1]} if "val" in counts else {}),
    }


def label_scores(probs, rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probability of the given label, top class, top probability) of the sample at each row of
    ``probs``, read in bounded blocks (the matrix may be a memmap of the whole training set)."""
    label_prob = np.empty(len(rows), np.float32)
    top_prob = np.empty(len(rows), np.float32)
    top = np.empty(len(rows), np.int64)
    for start in progress(range(0, len(rows), 8192), desc="filter_noisy", unit="chunk"):
        part = slice(start, start + 8192)
        block = np.asarray(probs[np.sort(rows[part])], dtype=np.float32)
        block = block[np.argsort(np.argsort(rows[part]))]  # back to sample order
        label_prob[part] = block[np.arange(len(block)), labels[part]]
        top[part] = block.argmax(1)
        top_prob[part] = block.max(1)
    return label_prob, top, top_prob


def implausible_labels(label_prob, top, top_prob, labels, max_label_prob: float, min_top_prob: float) -> np.ndarray:
    """The recipe's rule: the given label below ``max_label_prob`` and another class at least
    ``min_top_prob``. Out of fold, ``min_top_prob: 0`` ranks by the label's probability alone,
    which the benchmark found the better rule (bench/results/noise_filter.md)."""
    return (label_prob < max_label_prob) & (top != labels) & (top_prob >= min_top_prob)
