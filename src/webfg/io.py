"""File formats shared by every stage (SPEC C) and the atomic-write rule.

Split lists are UTF-8 text, one sample a line: ``<relpath> <label>``, split on
the LAST space so paths may contain spaces; unlabelled lists hold only the
relpath. Relpaths are relative to the data root and may never escape it.

Predictions of one model on one split are three files sharing a stem:
``<stem>.npy`` (float16 probabilities, shape (N, C), memory-mappable),
``<stem>.rows.txt`` (the N relpaths, in row order) and ``<stem>.json``
(metadata: model, split, val accuracy where known).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence

import numpy as np


class InputError(ValueError):
    """Bad user input: the message names the file (and line) and what was expected."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched, so
    no stage ever leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def check_relpath(relpath: str, where: str) -> str:
    """Reject absolute paths and paths that climb out of the data root."""
    p = PurePosixPath(relpath)
    if not relpath or p.is_absolute() or ".." in p.parts or "\\" in relpath:
        raise InputError(f"{where}: path {relpath!r} must be relative to the data root and stay inside it")
    return relpath


def read_split_list(
    path: str | os.PathLike,
    num_classes: int | None = None,
    labelled: bool = True,
) -> list[tuple[str, int]] | list[str]:
    """Read a split list; every bad line raises ``InputError`` naming ``path:line``.

    Labelled lists return ``[(relpath, label)]``, unlabelled ones ``[relpath]``.
    """
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(lines, 1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        if not labelled:
            out.append(check_relpath(line, where))
            continue
        relpath, sep, label_text = line.rpartition(" ")
        if not sep or not relpath:
            raise InputError(f"{where}: expected '<path> <label>', got {line!r}")
        try:
            label = int(label_text)
        except ValueError:
            raise InputError(f"{where}: label {label_text!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise InputError(f"{where}: label {label} out of range [0, {num_classes})")
        out.append((check_relpath(relpath, where), label))
    return out


def write_split_list(path: str | os.PathLike, samples: Iterable) -> None:
    """Write ``[(relpath, label)]`` or ``[relpath]`` atomically."""
    lines = []
    for s in samples:
        lines.append(f"{s[0]} {int(s[1])}" if isinstance(s, tuple) else str(s))
    write_text(path, "".join(line + "\n" for line in lines))


def prediction_paths(stem: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The (npy, rows, json) paths of one prediction stem."""
    stem = str(stem)
    for ext in (".npy", ".rows.txt", ".json"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return Path(stem + ".npy"), Path(stem + ".rows.txt"), Path(stem + ".json")


def save_predictions(stem, probs: np.ndarray, relpaths: Sequence[str], meta: dict) -> None:
    """Write the three files of SPEC C, each atomically; ``load_predictions`` checks
    that the matrix and the row list agree."""
    npy, rows, js = prediction_paths(stem)
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != len(relpaths):
        raise ValueError(f"probs shape {probs.shape} does not match {len(relpaths)} rows")
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, probs.astype(np.float16, copy=False), allow_pickle=False)
    write_split_list(rows, list(relpaths))
    write_json(js, {**meta, "num_rows": int(probs.shape[0]), "num_classes": int(probs.shape[1])})


def load_predictions(stem, mmap: bool = True, check: bool = True) -> tuple[np.ndarray, list[str], dict]:
    """Return (probs, relpaths, meta) of a checked prediction (``webfg.stream.open_prediction``:
    layout, row names, JSON and, with ``check``, every value); probs is a read-only memmap
    in the stored dtype and order by default, every reader converts its row blocks."""
    from webfg.stream import open_prediction

    pred = open_prediction(stem, check_values=check)
    probs = pred.array()
    return (probs if mmap else np.array(probs)), pred.relpaths, pred.meta


def log_to_stderr(msg: str) -> None:
    """The log function of the workflow scripts (their stderr is the rule's log file)."""
    import sys

    print(msg, file=sys.stderr, flush=True)
