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
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np


class InputError(ValueError):
    """Bad user input: the message names the file (and line) and what was expected."""


def current_umask() -> int:
    """The process's umask: from /proc on Linux (no window in which another thread's files
    get a different mask), else by setting it and putting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched, so
    no stage ever leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would outlive the rename
    finally:
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
    lines = read_split_lines(path, num_classes, labelled)
    return [(relpath, label) for _, relpath, label in lines] if labelled else [relpath for _, relpath in lines]


LABEL_LINE = re.compile(r"(.+)[ \t](-?[0-9]+)")  # split on the last space or tab: paths may hold spaces


def read_split_lines(path, num_classes: int | None = None, labelled: bool = True) -> list[tuple]:
    """``read_split_list`` with line numbers: ``[(lineno, relpath, label)]`` or ``[(lineno, relpath)]``.

    Accepted as written by hand or by other tools: a UTF-8 byte-order mark, CRLF line
    ends, blank lines, and spaces or tabs after the label. Refused, naming the line:
    binary data (NUL and other control characters), a label that is not a plain
    non-negative integer, a path that leaves the data root.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a list file") from None
    except FileNotFoundError:
        raise InputError(f"{path}: list file not found") from None
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        where = f"{path}:{lineno}"
        line = line.removesuffix("\r")
        control = next((c for c in line if ord(c) < 32 and c != "\t" or c == "\x7f"), None)
        if control is not None:
            what = "NUL byte" if control == "\0" else f"control character {control!r}"
            raise InputError(
                f"{where}: {what} in the line (binary data?); expected "
                + ("'<path> <label>'" if labelled else "'<path>'")
            )
        if not line.strip():
            continue
        if not labelled:
            out.append((lineno, check_relpath(line, where)))
            continue
        stripped = line.rstrip(" \t")
        match = LABEL_LINE.fullmatch(stripped)
        if not match:
            relpath, sep, label_text = stripped.rpartition(" ")
            if not sep or not relpath.strip():
                raise InputError(f"{where}: expected '<path> <label>', got {line!r}")
            raise InputError(f"{where}: label {label_text!r} is not an integer")
        relpath, label = match.group(1), int(match.group(2))
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise InputError(f"{where}: label {label} out of range [0, {num_classes})")
        out.append((lineno, check_relpath(relpath, where), label))
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
    print(msg, file=sys.stderr, flush=True)


def rule_script(snakemake) -> None:
    """The first line of every workflow script: stderr goes to the rule's log, and an
    ``InputError`` ends the job with its one line in the log and on the terminal, exit
    status 1 and no traceback. Any other exception is a bug: its traceback goes to the log."""
    terminal = sys.stderr
    sys.stderr = open(snakemake.log[0], "w", encoding="utf-8", buffering=1)

    def report(exc_type, exc, tb):
        if issubclass(exc_type, InputError):
            line = f"{snakemake.rule}: error: {exc}"
            for stream in (sys.stderr, terminal):
                print(line, file=stream, flush=True)
        else:
            sys.__excepthook__(exc_type, exc, tb)

    sys.excepthook = report


def read_yaml(path: str | os.PathLike):
    """Parse a YAML file safely; a duplicate key (which PyYAML lets silently win) or a
    syntax error raises ``InputError`` naming the file, line and key."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first_line = {}
                for key_node, _ in node.value:  # the mapping's own keys: a `<<` merge may be overridden
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        seen = key in first_line
                    except TypeError:  # unhashable key: SafeLoader's own error follows
                        continue
                    if seen:
                        raise InputError(
                            f"{path}:{key_node.start_mark.line + 1}: duplicate key {key!r} "
                            f"(first at line {first_line[key]}); each key may appear once"
                        )
                    first_line[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{line}: not valid YAML ({e.problem or e.context})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e})") from None
