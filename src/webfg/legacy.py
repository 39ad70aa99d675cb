"""Import the original's result pickles (MMClassification ``--out`` files) as SPEC C predictions.

The original (Ezra-Yu/ACCV2022_FGIA_1st) saved one pickle per model: a list of
``{'filename': str, 'scores': array(C)}`` (one dict per test image), the accuracy
estimate in the file name (``…-7620.pkl``). A column layout ``{'filename': [...],
'scores': array(N, C)}`` and the ensembled ``{filename: scores}`` dict that
``tools/re-distribute-label.py`` reads (``--dump-all``) are accepted too. Everything is read through the restricted
unpickler of ``webfg.safe_pickle``: a file holding anything but data is refused.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from webfg.io import InputError, check_relpath, save_predictions
from webfg.postprocess import accuracy_from_filename
from webfg.safe_pickle import load_data_pickle
from webfg.stream import ROW_SUM_TOLERANCE


def read_legacy_result(path) -> tuple[list[str], np.ndarray]:
    """(file names, scores float32 (N, C)) from one of the original's result pickles."""
    path = Path(path)
    try:
        obj = load_data_pickle(path.read_bytes(), str(path))
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if isinstance(obj, dict) and {"filename", "scores"} <= set(obj):
        names, scores = list(obj["filename"]), np.asarray(obj["scores"])
    elif (
        isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())
    ):
        # the ensembled {file name: scores} dict (--dump-all)
        names = list(obj)
        try:
            scores = np.stack([np.asarray(v) for v in obj.values()])
        except ValueError:
            raise InputError(f"{path}: entries have scores of different lengths") from None
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        try:
            names = [r["filename"] for r in obj]
            scores = np.stack([np.asarray(r["scores"]) for r in obj])
        except KeyError as e:
            raise InputError(f"{path}: an entry has no {e.args[0]!r} key (expected 'filename' and 'scores')") from None
        except ValueError:
            raise InputError(f"{path}: entries have scores of different lengths") from None
    else:
        raise InputError(
            f"{path}: expected a list of {{'filename', 'scores'}} dicts (the original's result file) "
            "or a {file name: scores} dict"
        )
    if scores.ndim != 2 or len(names) != scores.shape[0] or not np.issubdtype(scores.dtype, np.number):
        raise InputError(f"{path}: {len(names)} file names for scores of shape {scores.shape}")
    if not all(isinstance(n, str) for n in names):
        raise InputError(f"{path}: file names must be strings")
    scores = scores.astype(np.float32)
    bad = ~np.isfinite(scores).all(1) | (scores < 0).any(1)
    bad |= ~(np.abs(scores.sum(1, dtype=np.float64) - 1) <= ROW_SUM_TOLERANCE)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{path}: row {row} ({names[row]}) has NaN, inf or negative scores or does not sum "
            f"to 1 (+-{ROW_SUM_TOLERANCE}): expected softmax probabilities"
        )
    if len(set(names)) != len(names):
        raise InputError(f"{path}: a file name appears twice")
    return names, scores


def import_legacy(path, out_stem, split: str = "testb") -> dict:
    """Write ``out_stem``.npy/.rows.txt/.json from one result pickle; rows are ``<split>/<file name>``.

    The JSON's ``val_accuracy`` is the accuracy in the file name, so the ensemble rule and
    ``webfg ensemble`` weigh these models as the original did; it is null when the name
    has none (e.g. an already-ensembled ``--dump-all`` file), which only an ensemble of
    one file or an unweighted one accepts.
    """
    names, scores = read_legacy_result(path)
    rows = [check_relpath(f"{split}/{PurePosixPath(n).name}", f"{path}") for n in names]
    try:
        accuracy = accuracy_from_filename(path)
    except InputError:
        accuracy = None
    meta = {
        "model": Path(path).stem,
        "split": split,
        "val_accuracy": accuracy,
        "source": str(path),
        "accuracy_source": "file name (legacy)",
    }
    save_predictions(out_stem, scores, rows, meta)
    return meta
