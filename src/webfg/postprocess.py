"""Post-processing of test predictions (SPEC A4): ensemble, pseudo-labels,
greedy class redistribution and the submission files.

Probabilities are (N, C) arrays, float16 on disk and usually memory-mapped
(see ``webfg.io``); every function here reads them in row chunks so memory
stays bounded by ``chunk_rows * C`` rather than by N or by the model count.
The formulas follow the original ACCV 2022 WebFG 1st-place scripts
(``tools/emsemble.py``, ``tools/creat_pseudo.py``,
``tools/re-distribute-label.py`` of ``Ezra-Yu/ACCV2022_FGIA_1st``).
"""

from __future__ import annotations

import mmap
import os
import re
import threading
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from webfg.io import (
    InputError,
    atomic_path,
    prediction_paths,
    read_json,
    read_split_list,
    write_json,
    write_split_list,
    write_text,
)
from webfg.stream import (
    BLOCK_ROWS,
    HALF_TO_FLOAT_SCALE,
    Prediction,
    check_block,
    half_bits_to_float,
    write_npy_header,
)

CHUNK_ROWS = 512  # x 5,000 classes: 5 MB per float16 read, 10 MB float32 sums per worker


def _row_chunks(n: int, chunk_rows: int) -> Iterator[slice]:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, n, chunk_rows):
        yield slice(start, min(start + chunk_rows, n))


# --------------------------------------------------------------------- ensemble


def ensemble_weights(val_accuracies: Sequence[float], power: float) -> np.ndarray:
    """Model weights ``w_i = (acc_i / min_j acc_j) ** power`` as float64.

    This is the original's ``--scale --factor`` rule (factor 25 in the final
    submission); ``power=0`` gives the plain, unweighted ensemble. Dividing by
    the minimum keeps every weight >= 1, so only the ratios between models matter.
    """
    accs = np.asarray(val_accuracies, dtype=np.float64)
    if accs.ndim != 1 or accs.size == 0:
        raise ValueError("need a non-empty list of accuracies")
    bad = accs[~((accs > 0) & (accs <= 1))]
    if bad.size:
        raise ValueError(f"accuracies must lie in (0, 1], got {bad.tolist()}")
    return (accs / accs.min()) ** power


def member_weights(stems: Sequence, accuracies: Sequence[float | None], power: float) -> np.ndarray:
    """``ensemble_weights``, where an unknown accuracy (None) is allowed only when it
    cannot matter: power 0 or a single member; otherwise the error names the file."""
    if power == 0 or len(stems) == 1:
        return np.ones(len(stems))
    for stem, acc in zip(stems, accuracies):
        if acc is None:
            raise InputError(f"{prediction_paths(stem)[2]}: no val_accuracy, needed for weights with power {power:g}")
    return ensemble_weights(accuracies, power)


_LEGACY_ACC = re.compile(r"-(\d{4})(?:\.[^-]*)?$")


def accuracy_from_filename(name: str | os.PathLike) -> float:
    """Accuracy encoded in the original's result names: ``vit-l-7620.pkl`` -> 0.7620.

    The original parsed the last ``-NNNN`` of the name (a leaderboard estimate in
    basis points); only ratios of these numbers are ever used.
    """
    match = _LEGACY_ACC.search(Path(name).name)
    if not match:
        raise InputError(f"{name}: no accuracy '-NNNN' before the extension (e.g. 'model-7620.pkl')")
    return int(match.group(1)) / 10000


def _open_members(stems: Sequence[str | os.PathLike]) -> list[Prediction]:
    """Every member, checked (``webfg.stream.Prediction``) and against the first before any
    data is read: same class count, same rows in the same order."""
    if not stems:
        raise InputError("ensemble of zero models (empty folder or no prediction files given)")
    members = [Prediction(stem) for stem in stems]
    first = members[0]
    for m in members[1:]:
        if m.shape[1] != first.shape[1]:
            raise InputError(f"{m.npy} has {m.shape[1]} classes but {first.npy} has {first.shape[1]}")
        if m.shape[0] != first.shape[0]:
            raise InputError(
                f"{m.npy} has {m.shape[0]} rows but {first.npy} has {first.shape[0]}: "
                "an ensemble needs predictions of the same images"
            )
        if m.relpaths != first.relpaths:
            if set(m.relpaths) == set(first.relpaths):
                raise InputError(f"row order of {m.rows_path} differs from {first.rows_path}")
            i = next(i for i, (a, b) in enumerate(zip(m.relpaths, first.relpaths)) if a != b)
            raise InputError(
                f"{m.rows_path}:{i + 1}: row {m.relpaths[i]!r} is not in {first.rows_path} "
                "(an ensemble needs predictions of the same images)"
            )
    return members


def _inputs_fit_in_memory(members: Sequence[Prediction]) -> bool:
    """Whether the inputs fit in the page cache (then they are left there for the next reader)."""
    total = sum(os.path.getsize(m.npy) for m in members)
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return True
    return total < 0.8 * avail


def weighted_pass(
    members: Sequence[Prediction],
    scales: np.ndarray,
    consume,
    chunk_rows: int = CHUNK_ROWS,
    threads: int | None = None,
    check_sums: bool = True,
) -> None:
    """One pass over the members: for every row chunk [start, stop), ``consume(start, stop,
    totals)`` gets ``totals[g] = sum_i scales[g, i] * P_i[start:stop]`` (float32, G x rows x C).

    Row chunks go to ``threads`` workers (default: the CPUs this process may use); each reads
    its chunk of every member with pread (no memory map: RSS stays at the buffers) and, per
    64-row block, converts float16 with the exact bit trick of ``webfg.stream``, checks the
    values and row sums, and accumulates ``total += scale * x`` in place. Nothing is
    allocated per block. Inputs are evicted from the page cache only when they would not
    fit in memory. ``consume`` runs in the workers on disjoint rows. The first bad chunk's
    InputError (file and row) is raised, deterministically, after the workers stop.
    """
    scales = np.asarray(scales, dtype=np.float32)
    n, c = members[0].shape
    chunk_rows = max(1, min(chunk_rows, n))
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, min(threads, -(-n // chunk_rows)))
    evict = not _inputs_fit_in_memory(members)
    fds = [os.open(m.npy, os.O_RDONLY) if m.fast else -1 for m in members]
    arrays = [None if m.fast else m.array() for m in members]
    for fd in fds:
        if fd >= 0 and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    local = threading.local()
    failed: dict[int, BaseException] = {}
    lock = threading.Lock()

    def work(start: int) -> None:
        with lock:
            if failed and start > min(failed):
                return
        stop = min(start + chunk_rows, n)
        rows = stop - start
        if not hasattr(local, "bits"):
            local.bits = np.empty(chunk_rows * c, dtype=np.uint16)
            local.work = np.empty((BLOCK_ROWS, c), dtype=np.float32)
            local.scaled = np.empty((BLOCK_ROWS, c), dtype=np.float32)
            local.totals = np.empty((scales.shape[0], chunk_rows, c), dtype=np.float32)
        totals = local.totals[:, :rows]
        try:
            for i, m in enumerate(members):
                where = str(m.npy)
                if m.fast:
                    bits = m.read_half_bits(fds[i], start, stop, local.bits)
                    if evict and hasattr(os, "posix_fadvise"):
                        os.posix_fadvise(fds[i], m.offset + start * c * 2, rows * c * 2, os.POSIX_FADV_DONTNEED)
                    check_block(bits.view(np.float16), where, start)
                    factor = HALF_TO_FLOAT_SCALE
                else:
                    block = np.asarray(arrays[i][start:stop], dtype=np.float32)
                    check_block(block, where, start, block.sum(axis=1) if check_sums else None)
                    factor = np.float32(1)
                for s in range(0, rows, BLOCK_ROWS):
                    e = min(s + BLOCK_ROWS, rows)
                    if m.fast:
                        x = half_bits_to_float(bits[s:e], local.work[: e - s])
                        if check_sums:
                            check_block(bits[s:e].view(np.float16), where, start + s, x.sum(axis=1) * factor)
                    else:
                        x = block[s:e]
                    for g in range(scales.shape[0]):
                        scale = np.float32(scales[g, i] * factor)
                        if i == 0:
                            np.multiply(x, scale, out=totals[g, s:e])
                        else:
                            y = np.multiply(x, scale, out=local.scaled[: e - s])
                            np.add(totals[g, s:e], y, out=totals[g, s:e])
            consume(start, stop, totals)
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the other workers
            with lock:
                failed[start] = e

    try:
        starts = range(0, n, chunk_rows)
        if threads == 1:
            for start in starts:
                work(start)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(work, starts))
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
    if failed:
        raise failed[min(failed)]


def ensemble_predictions(
    stems: Sequence[str | os.PathLike],
    weights: Sequence[float],
    out_stem: str | os.PathLike,
    chunk_rows: int = CHUNK_ROWS,
    meta: dict | None = None,
    check_sums: bool = True,
    dtype=np.float16,
    threads: int | None = None,
) -> None:
    """Write ``out = sum_i w_i * P_i / sum_i w_i`` as a prediction of ``dtype``.

    The original divides by M (the model count) instead of ``sum w``: the two differ
    by one positive constant, so the argmax and every column's ranking (all that the
    greedy redistribution reads) are identical, and with all w_i = 1 both are the
    mean the pseudo-label threshold relies on. Dividing by ``sum w`` keeps each row a
    probability distribution, so the recipe's power 25 (weights up to ~1e10 when
    accuracies spread) cannot overflow or lose the small values.

    ``dtype`` float32 is for a final ensemble: rounding to float16 would make top-2 ties
    (and move greedy's rankings) that the float32 sum did not have; float16 (the round
    ensembles, read by the pseudo-label threshold) halves the file.

    Streaming, one pass, both cores (``weighted_pass``); memory is O(threads * chunk_rows
    * C) whatever M and N are. The output is written under a temporary name and renamed
    into place. Raises InputError naming the file before any data is read when rows,
    row order or class count differ, or a file is truncated, empty or not a float
    matrix; and naming the file and row, with no output left, when a block holds NaN,
    inf, values outside [0, 1] or (``check_sums``) a row that does not sum to ~1.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(stems),) or not np.all(np.isfinite(weights) & (weights > 0)):
        raise ValueError(f"need one positive finite weight per model, got {weights.tolist()}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"ensemble dtype must be float16 or float32, got {dtype}")
    members = _open_members(stems)
    n, c = members[0].shape
    scales = (weights / weights.sum())[None, :]
    out_npy, out_rows, out_json = prediction_paths(out_stem)
    with atomic_path(out_npy) as tmp:
        with open(tmp, "wb") as out:
            write_npy_header(out, (n, c), dtype)
            offset = out.tell()
            out.truncate(offset + n * c * dtype.itemsize)
            fd = out.fileno()

            def consume(start, stop, totals):
                data = totals[0] if dtype == np.float32 else totals[0].astype(np.float16)
                os.pwrite(fd, memoryview(data).cast("B"), offset + start * c * dtype.itemsize)

            weighted_pass(members, scales, consume, chunk_rows, threads, check_sums)
    write_split_list(out_rows, members[0].relpaths)
    info = {"members": [str(s) for s in stems], "weights": weights.tolist()}
    write_json(out_json, {**info, **(meta or {}), "num_rows": n, "num_classes": c})


POWER_GRID = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 25.0)


def parse_power(value, key: str = "power"):
    """A configured power: a number >= 0, or the string ``auto``; anything else names ``key``."""
    if isinstance(value, str) and value.strip() == "auto":
        return "auto"
    try:
        power = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{key}: expected a number >= 0 or 'auto', got {value!r}") from None
    if not (np.isfinite(power) and power >= 0):
        raise InputError(f"{key}: expected a number >= 0 or 'auto', got {value!r}")
    return power


def member_accuracies(stems: Sequence) -> list[float | None]:
    """Each member's ``val_accuracy`` from its JSON (None where absent); the ensemble checks
    the rest of each file in its one pass."""
    out = []
    for stem in stems:
        npy, _, js = prediction_paths(stem)
        meta = read_json(js) if js.is_file() else {}
        if not isinstance(meta, dict):
            raise InputError(f"{js}: expected a JSON object")
        acc = meta.get("val_accuracy")
        if acc is not None and not (isinstance(acc, (int, float)) and 0 < acc <= 1):
            raise InputError(f"{prediction_paths(stem)[2]}: val_accuracy {acc!r} is not a number in (0, 1]")
        out.append(acc)
    return out


def choose_power(
    val_stems: Sequence,
    val_list,
    accuracies: Sequence[float | None],
    grid=POWER_GRID,
    key: str = "power",
    chunk_rows: int = CHUNK_ROWS,
    accuracy_from: Sequence | None = None,
    balanced: bool = True,
) -> tuple[float, list[tuple[float, float]]]:
    """The power of ``grid`` whose weighted ensemble of the members' val predictions has the
    best val accuracy (the smallest such power on ties); returns it and (power, accuracy) rows.

    Why: power 25 suits members within a few points of each other; with spread accuracies
    it puts all the weight on one model (0.71 vs 0.34 gives 8e7 : 1), which can be worse
    than the plain mean (power 0, in the grid). One pass computes every power's ensemble.
    ``accuracy_from``: the stems whose JSON gave ``accuracies`` (named when one is missing).
    ``balanced``: score by mean per-class recall, not plain accuracy: val follows the
    long-tailed training prior and plain accuracy rewards the members that lean hardest
    toward it, which a balanced test set punishes (bench/README.md).
    """
    members = _open_members(val_stems)
    for stem, acc in zip(accuracy_from or val_stems, accuracies):
        if acc is None:
            raise InputError(f"{key}: auto needs every member's val accuracy; {prediction_paths(stem)[2]} has none")
    answers = dict(read_split_list(val_list))
    missing = next((r for r in members[0].relpaths if r not in answers), None)
    if missing is not None:
        raise InputError(f"{val_list}: has no label for {missing!r}, a row of {members[0].rows_path}")
    truth = np.array([answers[r] for r in members[0].relpaths], dtype=np.int64)
    grid = [float(g) for g in grid]
    scales = np.stack([w / w.sum() for w in (ensemble_weights(accuracies, g) for g in grid)])
    preds = np.empty((len(grid), truth.size), dtype=np.int64)

    def consume(start, stop, totals):
        for g in range(len(grid)):
            preds[g, start:stop] = totals[g].argmax(axis=1)

    weighted_pass(members, scales, consume, chunk_rows)
    if balanced:  # mean per-class recall: the accuracy a uniform test prior would see
        present = np.bincount(truth) > 0
        hits = np.stack([np.bincount(truth, weights=(p == truth), minlength=present.size) for p in preds])
        acc = (hits[:, present] / np.bincount(truth)[present]).mean(axis=1)
    else:
        acc = (preds == truth).mean(axis=1)
    best = int(np.argmax(acc))
    return grid[best], list(zip(grid, acc.tolist()))


def write_power_choice(path, table: Sequence[tuple[float, float]], chosen: float) -> None:
    """``power  val_accuracy  chosen`` (TSV), the record of a ``power: auto`` choice."""
    write_text(
        path, "power\tval_accuracy\tchosen\n" + "".join(f"{p:g}\t{a:.6f}\t{int(p == chosen)}\n" for p, a in table)
    )


# ---------------------------------------------------------------- pseudo-labels


def _read_rows(probs: np.ndarray, rows: slice) -> np.ndarray:
    """``probs[rows]`` as an in-memory array; on a memory map the pages just read are
    unmapped again (madvise DONTNEED), so reading a map through does not grow RSS to
    the file size."""
    block = np.array(probs[rows])
    mm = getattr(probs, "_mmap", None)
    if isinstance(probs, np.memmap) and mm is not None and hasattr(mm, "madvise") and probs.flags.c_contiguous:
        base = probs.offset - probs.offset % mmap.ALLOCATIONGRANULARITY
        row_bytes = probs.strides[0]
        start = probs.offset - base + rows.start * row_bytes
        stop = probs.offset - base + rows.stop * row_bytes
        start -= start % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
    return block


def _row_max_argmax(probs: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (max as float64, argmax as int64), read chunk by chunk."""
    n = probs.shape[0]
    top = np.empty(n, dtype=np.float64)
    arg = np.empty(n, dtype=np.int64)
    for rows in _row_chunks(n, chunk_rows):
        block = _read_rows(probs, rows)
        arg[rows] = block.argmax(axis=1)
        top[rows] = block.max(axis=1)
    return top, arg


def confidence_and_label(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row max probability (float64) and argmax (int64): what pseudo-label selection sees."""
    return _row_max_argmax(probs)


def predicted_labels(probs: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Argmax per row (int64; the first maximum wins, like ``np.argmax``)."""
    return _row_max_argmax(probs, chunk_rows)[1]


def pseudo_labels(probs: np.ndarray, relpaths: Sequence[str], threshold: float) -> list[tuple[str, int]]:
    """Keep rows whose max probability is strictly greater than ``threshold``.

    Returns ``[(relpath, argmax)]`` in row order. The comparison is done in
    float64 (as the original's scalar comparison was): comparing a float16
    array with a Python float would round the threshold to float16 first.
    """
    if len(relpaths) != probs.shape[0]:
        raise ValueError(f"{len(relpaths)} relpaths for {probs.shape[0]} rows")
    top, arg = _row_max_argmax(probs)
    keep = np.flatnonzero(top > threshold)
    return [(relpaths[i], int(arg[i])) for i in keep]


def pseudo_yield(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Number of rows ``pseudo_labels`` would keep at each threshold (int64)."""
    top, _ = _row_max_argmax(probs)
    return np.array([int(np.count_nonzero(top > t)) for t in thresholds], dtype=np.int64)


def merge_meta(base: Sequence[tuple[str, int]], *extra: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Concatenate labelled lists (e.g. clean train + testa + testb pseudo-labels).

    A relpath present twice would train on one image with two labels or twice
    the weight, so it raises InputError naming the path.
    """
    merged: list[tuple[str, int]] = []
    seen: set[str] = set()
    for samples in (base, *extra):
        for relpath, label in samples:
            if relpath in seen:
                raise InputError(f"{relpath!r} appears in more than one annotation list")
            seen.add(relpath)
            merged.append((relpath, int(label)))
    return merged


# ---------------------------------------------------------- redistribution


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """How many rows carry each label: int64 array of length ``num_classes``."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes})")
    return np.bincount(labels, minlength=num_classes)


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores; among equal scores the lower row wins.

    The original used ``np.argpartition`` whose choice among ties is unspecified
    (and CPU-dependent with SIMD sorting); this rule agrees with it whenever the
    k-th largest score is unique and is reproducible when it is not.
    """
    kth = np.partition(scores, scores.size - k)[scores.size - k]
    above = np.flatnonzero(scores > kth)
    at = np.flatnonzero(scores == kth)[: k - above.size]
    return np.concatenate([above, at])


def _greedy_class_order(counts: np.ndarray, k: int) -> list[int]:
    """Classes predicted fewer than k times, in the order the original visits them.

    The original collects them in a dict keyed by their count, scanning classes
    in ascending order, and then walks that dict: groups in order of first
    appearance of each count, ascending class index within a group.
    """
    groups: dict[int, list[int]] = {}
    for c in np.flatnonzero(counts < k):
        groups.setdefault(int(counts[c]), []).append(int(c))
    return [c for group in groups.values() for c in group]


def redistribute_greedy(probs: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """The original's greedy redistribution toward >= k predictions per class (int64 labels).

    Semantics of ``tools/re-distribute-label.py``, kept for parity:
      * ``pred`` = argmax of ``probs``; ``counts`` = per-class counts of ``pred``,
        computed ONCE (they go stale as rows are relabelled);
      * classes with ``counts[c] < k`` are visited in ``_greedy_class_order``;
      * for class c, ``score = probs[:, c]`` with the rows whose ORIGINAL argmax
        is c set to 0 (masked, not removed); the ``k - counts[c]`` rows with the
        highest score are relabelled c;
      * a row can be relabelled several times, the last class wins; a donor class
        may fall below k and is never revisited.
    Ties at the k-th score go to the lower row index (see ``_top_rows``).
    """
    n, num_classes = probs.shape
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, {n}], got {k}")
    pred = predicted_labels(probs, chunk_rows)
    counts = class_counts(pred, num_classes)
    labels = pred.copy()
    order = _greedy_class_order(counts, k)
    batch = 256  # columns gathered per pass over the rows: one pass reads every page
    for first in range(0, len(order), batch):
        classes = order[first : first + batch]
        columns = np.empty((n, len(classes)), dtype=np.float32)
        for rows in _row_chunks(n, chunk_rows):
            columns[rows] = _read_rows(probs, rows)[:, classes]
        for j, c in enumerate(classes):
            scores = columns[:, j]
            scores[pred == c] = 0
            labels[_top_rows(scores, k - int(counts[c]))] = c
    return labels


# ------------------------------------------------- global (prior / transport) balancing


def top_candidates(probs: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most probable classes: (log p float32 (N, k), class ids int32 (N, k)).

    The balancing methods only move a row among its candidates: a class outside a
    row's top k has too little probability to be worth it, and (N, k) arrays keep the
    memory at N * k * 8 bytes (12 MB for 90,000 rows, k = 16) instead of N * C.
    float16 rows are ranked on their bit patterns (the same order for values >= 0),
    so only the k chosen values per row are converted.
    """
    n, c = probs.shape
    k = max(1, min(k, c))
    logp = np.empty((n, k), dtype=np.float32)
    cand = np.empty((n, k), dtype=np.int32)
    for rows in _row_chunks(n, chunk_rows):
        block = _read_rows(probs, rows)
        keys = block.view(np.uint16) if block.dtype == np.float16 else block
        idx = np.argpartition(keys, c - k, axis=1)[:, c - k :] if k < c else np.broadcast_to(np.arange(c), block.shape)
        cand[rows] = idx
        logp[rows] = np.log(np.maximum(np.take_along_axis(block, idx, axis=1).astype(np.float32), 1e-30))
    return logp, cand


def log_train_prior(train_counts: np.ndarray) -> np.ndarray:
    """Centred log of the (add-one smoothed) training class frequencies, float64 (C,)."""
    counts = np.asarray(train_counts, dtype=np.float64)
    u = np.log((counts + 1) / (counts.sum() + counts.size))
    return u - u.mean()


def _soft_counts(logp: np.ndarray, cand: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Expected class counts of ``softmax(log p + shift[class])`` over each row's candidates."""
    s = logp + shift.astype(np.float32)[cand]
    s -= s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=1, keepdims=True)
    return np.bincount(cand.ravel(), weights=s.ravel(), minlength=shift.size)


def training_bias_exponent(
    logp: np.ndarray, cand: np.ndarray, log_train: np.ndarray, max_tau: float = 3.0, steps: int = 30
) -> float:
    """tau >= 0 such that, after ``log p - tau * log_train``, the expected class counts of the
    test rows no longer grow with the training prior (zero least-squares slope of log count
    on ``log_train``).

    Why this holds at the right tau: a test prior drawn independently of the training
    prior (balanced, i.i.d. uniform, lognormal, ...) is uncorrelated with it, so any slope
    left is the members' lean toward their training data. One number for all classes: it
    cannot follow a class's own sampling noise, which is what forced balancing overfits.
    """
    u = log_train - log_train.mean()
    if float(u @ u) < 1e-12:  # a balanced training set: nothing to correct
        return 0.0
    mean_count = logp.shape[0] / u.size

    def slope(tau):
        counts = _soft_counts(logp, cand, -tau * u)
        return float(u @ np.log(counts + 0.5 * mean_count)) / float(u @ u)

    if slope(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, max_tau
    if slope(hi) > 0:
        return hi
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def map_test_prior(
    logp: np.ndarray, cand: np.ndarray, shift: np.ndarray, concentration: float, iters: int = 100, tol: float = 1e-4
) -> np.ndarray:
    """MAP-EM (Saerens et al. 2002) estimate of the test class prior, as log pi (C,), for
    posteriors ``softmax(log p + shift)`` made under a uniform prior, with a symmetric
    Dirichlet prior of ``concentration * N / C`` extra rows per class pulling pi toward uniform."""
    n, num_classes = logp.shape[0], shift.size
    pseudo = concentration * n / num_classes
    log_pi = np.full(num_classes, -np.log(num_classes))
    for _ in range(iters):
        counts = _soft_counts(logp, cand, shift + log_pi)
        new = np.log((counts + pseudo) / (n + pseudo * num_classes))
        step = float(np.max(np.abs(new - log_pi)))
        log_pi = new
        if step < tol:
            break
    return log_pi


def redistribute_map(
    probs: np.ndarray,
    train_counts: np.ndarray,
    concentration: float = 4.0,
    candidates: int = 16,
    chunk_rows: int = CHUNK_ROWS,
    log=None,
) -> np.ndarray:
    """Labels ``argmax_c log p + log pi_c - tau * log pi_train_c``: the logit adjustment by the
    ensemble's effective training prior (tau of ``training_bias_exponent``), then the MAP-EM
    test prior pi of ``map_test_prior`` (``concentration`` inf: pi uniform). Needs the
    training class counts (``train_counts``, length C)."""
    n, num_classes = probs.shape
    train_counts = np.asarray(train_counts)
    if train_counts.shape != (num_classes,):
        raise ValueError(f"need {num_classes} training class counts, got shape {train_counts.shape}")
    if not concentration >= 0:
        raise ValueError(f"concentration must be >= 0, got {concentration}")
    logp, cand = top_candidates(probs, candidates, chunk_rows)
    u = log_train_prior(train_counts)
    tau = training_bias_exponent(logp, cand, u)
    log_pi = map_test_prior(logp, cand, -tau * u, concentration) if np.isfinite(concentration) else 0 * u
    if log:
        log(
            f"map: training-prior exponent tau {tau:.3f}; test prior estimate within "
            f"[{np.exp(log_pi).min() * u.size:.2f}, {np.exp(log_pi).max() * u.size:.2f}] x uniform"
        )
    score = logp + (log_pi - tau * u).astype(np.float32)[cand]
    return cand[np.arange(n), score.argmax(axis=1)].astype(np.int64)


def _soft_assign(logp, cand, dual, temperature):
    """Row-wise softmax of ``(log p + dual[class]) / temperature`` over the candidates."""
    z = (logp + dual[cand]) / temperature
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def balance_duals(logp, cand, target, temperatures=(1.0,), iters: int = 300, tol: float = 1e-2, log=None):
    """Per-class log-scale ``dual`` (float32, length C) that makes the expected class counts
    of ``softmax((log p + dual) / T)`` equal ``target`` (Sinkhorn on the candidates).

    At T = 1 this is prior correction: the posteriors are re-weighted by a class factor
    exp(dual) until their mean matches the target prior (the EM of Saerens et al. 2002
    with the prior fixed). Lowering T over ``temperatures`` (each stage warm-starts the
    next) approaches the hard assignment that maximises sum log p under the class
    capacities ``target`` (optimal transport, entropic regularisation -> 0). Classes
    no row has as a candidate keep dual 0 and their target is spread over the others.
    """
    num_classes = target.size
    present = np.bincount(cand.ravel(), minlength=num_classes) > 0
    want = np.where(present, target, 0.0)
    want = want * (target.sum() / want.sum())
    log_want = np.log(np.where(present, want, 1.0))
    dual = np.zeros(num_classes, dtype=np.float64)
    flat = cand.ravel()
    for stage, temperature in enumerate(temperatures):
        # intermediate stages only warm-start the next; the default tolerance (1 % of each
        # class's count, 0.18 rows at N/C = 18) is far below what changes a hard label
        stage_tol = tol if stage == len(temperatures) - 1 else max(tol, 1e-2)
        for it in range(iters):  # noqa: B007 (the count is logged after the loop)
            q = _soft_assign(logp, cand, dual.astype(np.float32), temperature)
            col = np.bincount(flat, weights=q.ravel(), minlength=num_classes)
            err = float(np.max(np.abs(col[present] / want[present] - 1)))
            if err < stage_tol:
                break
            dual[present] += temperature * (log_want[present] - np.log(np.maximum(col[present], 1e-12)))
            dual -= dual[present].mean()
        if log:
            log(f"balance: T={temperature:g} {it + 1} iterations, max relative count error {err:.3g}")
    return dual.astype(np.float32)


def redistribute_balanced(
    probs: np.ndarray,
    method: str = "prior",
    strength: float = 1.0,
    temperature: float = 0.05,
    candidates: int = 16,
    target=None,
    chunk_rows: int = CHUNK_ROWS,
    log=None,
) -> np.ndarray:
    """Labels that move the predicted class distribution toward ``target`` (uniform by default).

    ``prior``: labels = argmax(log p + strength * dual) with the T = 1 duals of
    ``balance_duals``: a per-class prior correction. It assumes only that the test
    prior is ``target`` (not that every class has exactly N/C rows), so on an i.i.d.
    test set it corrects the models' bias toward their long-tailed training prior.
    ``transport``: the duals after annealing T down to ``temperature``: close to the
    assignment with class capacities N * target (the exactly balanced test-B case).
    ``strength`` in [0, 1] scales the correction (0 = argmax); it is the knob for test
    sets that are only partly balanced.
    """
    if method not in ("prior", "transport"):
        raise ValueError(f"unknown balancing method {method!r} (prior, transport)")
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    n, num_classes = probs.shape
    target = np.full(num_classes, 1.0 / num_classes) if target is None else np.asarray(target, dtype=np.float64)
    if target.shape != (num_classes,) or (target < 0).any() or target.sum() <= 0:
        raise ValueError(f"target prior must be {num_classes} non-negative numbers with a positive sum")
    target = target / target.sum() * n
    logp, cand = top_candidates(probs, candidates, chunk_rows)
    temperatures = [1.0]
    if method == "transport":
        if not 0 < temperature <= 1:
            raise ValueError(f"temperature must lie in (0, 1], got {temperature}")
        while temperatures[-1] * 0.5 > temperature:
            temperatures.append(temperatures[-1] * 0.5)
        temperatures.append(temperature)
    dual = balance_duals(logp, cand, target, temperatures, log=log)
    score = logp + np.float32(strength) * dual[cand]
    return cand[np.arange(n), score.argmax(axis=1)].astype(np.int64)


# ------------------------------------------------------------------ submission


def write_submission(
    csv_path: str | os.PathLike,
    zip_path: str | os.PathLike,
    relpaths: Sequence[str],
    labels: Sequence[int],
) -> None:
    """Write the challenge's submission: ``<file>,<4-digit class>`` lines and a zip of them.

    ``<file>`` is the relpath without its split folder (``testb/abc.jpg`` ->
    ``abc.jpg``). No header, ``\\n`` line ends, row order kept. The zip holds the
    single CSV under its basename, with a fixed timestamp so reruns give the
    same bytes. Both files are written atomically.
    """
    if len(relpaths) != len(labels):
        raise ValueError(f"{len(relpaths)} relpaths for {len(labels)} labels")
    lines = []
    for relpath, label in zip(relpaths, labels):
        parts = PurePosixPath(relpath).parts
        name = "/".join(parts[1:]) if len(parts) > 1 else relpath
        if "," in name or "\n" in name or "\r" in name:
            raise InputError(f"file name {name!r} contains a comma or line break; it cannot go in the CSV")
        if int(label) < 0:
            raise ValueError(f"negative label {label} for {relpath!r}")
        lines.append(f"{name},{int(label):04d}\n")
    text = "".join(lines)
    write_text(csv_path, text)

    info = zipfile.ZipInfo(Path(csv_path).name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w") as archive:
            archive.writestr(info, text.encode("utf-8"))


# ---------------------------------------------------------- final labels file


METHODS = ("map", "greedy", "prior", "transport", "none")


def check_redistribute_params(method: str, params: dict, prefix: str = "") -> None:
    """One InputError naming ``prefix + key`` for a method or parameter out of range."""
    if method not in METHODS:
        raise InputError(f"{prefix}method: {method!r} is not one of {', '.join(METHODS)}")
    rules = {
        "k": (lambda v: isinstance(v, (int, np.integer)) and v >= 1, "an integer >= 1", ("greedy",)),
        "strength": (lambda v: 0 <= v <= 1, "a number in [0, 1]", ("prior", "transport")),
        "temperature": (lambda v: 0 < v <= 1, "a number in (0, 1]", ("transport",)),
        "candidates": (
            lambda v: isinstance(v, (int, np.integer)) and v >= 1,
            "an integer >= 1",
            ("map", "prior", "transport"),
        ),
        "concentration": (lambda v: v >= 0, "a number >= 0 (inf: a uniform test prior)", ("map",)),
    }
    for key, (ok, expected, used_by) in rules.items():
        if method in used_by and key in params:
            value = params[key]
            try:
                good = not isinstance(value, bool) and bool(ok(value))
            except TypeError:
                good = False
            if not good:
                raise InputError(f"{prefix}{key}: {value!r} is out of range for method {method}; expected {expected}")


def train_class_counts(train_list, num_classes: int) -> np.ndarray:
    """Class counts (int64, C) of a labelled list; a label >= C names the list's line.

    Clean lines (``<path> <digits>``, as clean_split writes them) are counted directly; any
    other line sends the file through ``read_split_list`` for its exact checks and message
    (550,000 training lines took 5 s through pathlib)."""
    labels = None
    try:
        text = Path(train_list).read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        text = None
    if text is not None:
        labels = []
        for line in text.splitlines():
            path, sep, label = line.rpartition(" ")
            if (
                not sep
                or not path
                or not label.isdigit()
                or not label.isascii()
                or path[0] in "/\ufeff"
                or "\\" in path
                or (".." in path and "/../" in f"/{path}/")
            ):
                labels = None
                break
            labels.append(int(label))
        if labels is not None and labels and max(labels) >= num_classes:
            labels = None
    if labels is None:
        labels = [y for _, y in read_split_list(train_list, num_classes=num_classes)]
    if not labels:
        raise InputError(f"{train_list}: no labelled rows; map needs the training class counts")
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def redistribute_labels(
    probs,
    relpaths,
    method: str,
    labels_path,
    counts_path,
    log=print,
    k: int = 0,
    strength: float = 1.0,
    temperature: float = 0.05,
    candidates: int = 16,
    concentration: float = 4.0,
    train_counts=None,
    prefix: str = "",
) -> np.ndarray:
    """Final labels of the submitted split, written as ``relpath  argmax  label`` (TSV),
    plus per-class counts before and after (for the report's histogram).

    ``map`` (``redistribute_map``: training-prior logit adjustment + MAP-EM test prior,
    needs ``train_counts``), ``greedy`` (the original's, uses ``k``), ``prior`` and
    ``transport`` (balancing toward a uniform prior, ``redistribute_balanced``), ``none``
    (argmax). Parameters out of range raise one InputError naming ``prefix + key``."""
    check_redistribute_params(
        method,
        {
            "k": k,
            "strength": strength,
            "temperature": temperature,
            "candidates": candidates,
            "concentration": concentration,
        },
        prefix,
    )
    if len(relpaths) != probs.shape[0]:
        raise ValueError(f"{len(relpaths)} relpaths for {probs.shape[0]} rows")
    if method == "greedy" and k > probs.shape[0]:
        raise InputError(f"{prefix}k: {k} is more than the {probs.shape[0]} rows to label")
    pred = predicted_labels(probs)
    if method == "greedy":
        labels = redistribute_greedy(probs, k)
    elif method == "map":
        if train_counts is None:
            raise InputError(f"{prefix}method: map needs the training class counts (a train list)")
        labels = redistribute_map(probs, train_counts, concentration, candidates, log=log)
    elif method in ("prior", "transport"):
        labels = redistribute_balanced(probs, method, strength, temperature, candidates, log=log)
    else:
        labels = pred.copy()
    num_classes = probs.shape[1]
    before, after = class_counts(pred, num_classes), class_counts(labels, num_classes)
    write_text(
        labels_path, "relpath\targmax\tlabel\n" + "".join(f"{p}\t{a}\t{b}\n" for p, a, b in zip(relpaths, pred, labels))
    )
    write_text(
        counts_path,
        "class\tbefore\tafter\n" + "".join(f"{c}\t{x}\t{y}\n" for c, (x, y) in enumerate(zip(before, after))),
    )
    floor = k if method == "greedy" else max(1, probs.shape[0] // num_classes - 2)
    log(
        f"{method}: {int((labels != pred).sum())} of {len(labels)} relabelled; classes predicted fewer than "
        f"{floor} times: {int((before < floor).sum())} before, {int((after < floor).sum())} after"
    )
    return labels


def read_labels(path) -> tuple[list[str], np.ndarray]:
    """Read the labels TSV written by ``redistribute_labels`` → (relpaths, final labels).

    Every bad line is one InputError naming ``path:line``: wrong header (e.g. a prediction
    ``.npy`` given instead), a label that is not a non-negative integer, a row named twice,
    no rows at all."""
    relpaths, labels, seen = [], [], {}
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(
            f"{path}: not UTF-8 text; expected the labels TSV of 'webfg redistribute' (relpath<TAB>argmax<TAB>label)"
        ) from None
    if lines[0].rstrip("\r").split("\t") != ["relpath", "argmax", "label"]:
        raise InputError(
            f"{path}:1: expected the header 'relpath<TAB>argmax<TAB>label' (the labels TSV of 'webfg redistribute')"
        )
    for lineno, line in enumerate(lines[1:], 2):
        if not line:
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3:
            raise InputError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(parts)}")
        relpath, _, label = parts
        if not label.isdigit() or not label.isascii():
            raise InputError(f"{path}:{lineno}: label {label!r} is not a non-negative integer")
        if relpath in seen:
            raise InputError(f"{path}:{lineno}: row {relpath!r} appears twice (also on line {seen[relpath]})")
        seen[relpath] = lineno
        relpaths.append(relpath)
        labels.append(int(label))
    if not relpaths:
        raise InputError(f"{path}: no rows after the header")
    return relpaths, np.asarray(labels, dtype=np.int64)
