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
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

import numpy as np

from webfg.io import (
    InputError,
    atomic_path,
    prediction_paths,
    read_split_list,
    write_json,
    write_split_list,
    write_text,
)
from webfg.stream import RowReader, check_block, check_row_sums, float_to_half, half_to_float, write_npy_header

CHUNK_ROWS = 2048  # x 5,000 classes: ~20 MB per float16 block, ~0.1 GB of buffers in all


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


def _open_members(stems: Sequence[str | os.PathLike]) -> tuple[list[RowReader], list[str]]:
    """Readers of every member, checked against the first before any data is read:
    same row list (order and count), same class count, float16 (N, C) files."""
    if not stems:
        raise InputError("ensemble of zero models (empty folder or no prediction files given)")
    readers, first_rows, first_paths = [], None, None
    try:
        for stem in stems:
            npy, rows_path, _ = prediction_paths(stem)
            reader = RowReader(npy)
            readers.append(reader)
            relpaths = read_split_list(rows_path, labelled=False)
            if reader.shape[0] != len(relpaths):
                raise InputError(f"{npy}: {reader.shape[0]} rows but {rows_path} lists {len(relpaths)}")
            if first_rows is None:
                first_rows, first_paths = relpaths, (npy, rows_path)
                continue
            if reader.shape[1] != readers[0].shape[1]:
                raise InputError(f"{npy} has {reader.shape[1]} classes but {first_paths[0]} has {readers[0].shape[1]}")
            if relpaths != first_rows:
                raise InputError(f"row order of {rows_path} differs from {first_paths[1]}")
    except BaseException:
        for r in readers:
            r.close()
        raise
    return readers, first_rows


def ensemble_predictions(
    stems: Sequence[str | os.PathLike],
    weights: Sequence[float],
    out_stem: str | os.PathLike,
    chunk_rows: int = CHUNK_ROWS,
    meta: dict | None = None,
    check_sums: bool = True,
) -> None:
    """Write ``out = sum_i w_i * P_i / sum_i w_i`` as a float16 prediction.

    The original divides by M (the model count) instead of ``sum w``: the two differ
    by one positive constant, so the argmax and every column's ranking (all that the
    greedy redistribution reads) are identical, and with all w_i = 1 both are the
    mean the pseudo-label threshold relies on. Dividing by ``sum w`` keeps each row a
    probability distribution, so the recipe's power 25 (weights up to ~1e10 when
    accuracies spread) cannot overflow float16 or lose the small values.

    Streaming (``webfg.stream``): row blocks of every member are read with pread into
    two reused buffers (the next read runs in a thread while this block is summed),
    converted to float32 and accumulated; memory is O(chunk_rows * C) whatever M and N
    are, and the page cache of the inputs is released as it is read. The output is
    written under a temporary name and renamed into place.

    Raises InputError naming the file before any data is read when row order, row
    count or class count differ, or a file is truncated or not float16; and naming
    the file and row, with no output left, when a block holds NaN, inf, negative
    values or (``check_sums``) a row that does not sum to ~1.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(stems),) or not np.all(np.isfinite(weights) & (weights > 0)):
        raise ValueError(f"need one positive finite weight per model, got {weights.tolist()}")
    scales = (weights / weights.sum()).astype(np.float32)
    readers, relpaths = _open_members(stems)
    n, c = readers[0].shape
    block = max(1, min(chunk_rows, n))
    buffers = [np.empty((block, c), dtype=np.float16) for _ in range(2)]
    as_float = np.empty((block, c), dtype=np.float32)
    total = np.empty((block, c), dtype=np.float32)
    out_half = np.empty((block, c), dtype=np.float16)
    tasks = [(rows, i) for rows in _row_chunks(n, block) for i in range(len(readers))]
    out_npy, out_rows, out_json = prediction_paths(out_stem)
    try:
        with atomic_path(out_npy) as tmp, open(tmp, "wb") as out, ThreadPoolExecutor(1) as pool:
            write_npy_header(out, (n, c))
            read = lambda t, buf: readers[tasks[t][1]].read(tasks[t][0].start, tasks[t][0].stop, buf)  # noqa: E731
            pending = pool.submit(read, 0, buffers[0]) if tasks else None
            for t, (rows, i) in enumerate(tasks):
                half = pending.result()
                if t + 1 < len(tasks):
                    pending = pool.submit(read, t + 1, buffers[(t + 1) % 2])
                m = rows.stop - rows.start
                check_block(half, str(readers[i].path), rows.start)
                values = half_to_float(half, as_float[:m])
                if check_sums:
                    check_row_sums(values.sum(axis=1), str(readers[i].path), rows.start)
                if i == 0:
                    np.multiply(values, scales[0], out=total[:m])
                else:
                    _accumulate(total[:m], values, scales[i])
                if i == len(readers) - 1:
                    out.write(float_to_half(total[:m], out_half[:m]).tobytes())
    finally:
        for r in readers:
            r.close()
    write_split_list(out_rows, relpaths)
    members = {"members": [str(s) for s in stems], "weights": weights.tolist()}
    write_json(out_json, {**members, **(meta or {}), "num_rows": n, "num_classes": c})


def _accumulate(total: np.ndarray, values: np.ndarray, scale: np.float32) -> None:
    """total += scale * values, in place, without a temporary (torch's fused add when present)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        values *= scale
        total += values
        return
    torch.from_numpy(total).add_(torch.from_numpy(values), alpha=float(scale))


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


def predicted_labels(probs: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Argmax per row (int64; the first maximum wins, like ``np.argmax``)."""
    return _row_max_argmax(probs, chunk_rows)[1]


def pseudo_labels(
    probs: np.ndarray, relpaths: Sequence[str], threshold: float
) -> list[tuple[str, int]]:
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
    """
    n, c = probs.shape
    k = max(1, min(k, c))
    logp = np.empty((n, k), dtype=np.float32)
    cand = np.empty((n, k), dtype=np.int32)
    for rows in _row_chunks(n, chunk_rows):
        block = _read_rows(probs, rows).astype(np.float32)
        idx = np.argpartition(block, c - k, axis=1)[:, c - k:] if k < c else np.broadcast_to(np.arange(c), block.shape)
        cand[rows] = idx
        logp[rows] = np.log(np.maximum(np.take_along_axis(block, idx, axis=1), 1e-30))
    return logp, cand


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
        for it in range(iters):
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


def redistribute_balanced(probs: np.ndarray, method: str = "prior", strength: float = 1.0,
                          temperature: float = 0.05, candidates: int = 16, target=None,
                          chunk_rows: int = CHUNK_ROWS, log=None) -> np.ndarray:
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


def redistribute_labels(probs, relpaths, method: str, k: int, labels_path, counts_path, log=print,
                        strength: float = 1.0, temperature: float = 0.05, candidates: int = 16) -> np.ndarray:
    """Final labels of the submitted split, written as ``relpath  argmax  label`` (TSV),
    plus per-class counts before and after (for the report's histogram).

    ``greedy`` (the original's, uses ``k``), ``prior`` and ``transport`` (global
    balancing toward a uniform prior, ``redistribute_balanced``), ``none`` (argmax)."""
    if len(relpaths) != probs.shape[0]:
        raise ValueError(f"{len(relpaths)} relpaths for {probs.shape[0]} rows")
    pred = predicted_labels(probs)
    if method == "greedy":
        labels = redistribute_greedy(probs, k)
    elif method in ("prior", "transport"):
        labels = redistribute_balanced(probs, method, strength, temperature, candidates, log=log)
    elif method == "none":
        labels = pred.copy()
    else:
        raise ValueError(f"unknown redistribution method {method!r} (greedy, prior, transport, none)")
    num_classes = probs.shape[1]
    before, after = class_counts(pred, num_classes), class_counts(labels, num_classes)
    write_text(labels_path, "relpath\targmax\tlabel\n"
               + "".join(f"{p}\t{a}\t{b}\n" for p, a, b in zip(relpaths, pred, labels)))
    write_text(counts_path, "class\tbefore\tafter\n"
               + "".join(f"{c}\t{x}\t{y}\n" for c, (x, y) in enumerate(zip(before, after))))
    log(f"{method}: {int((labels != pred).sum())} of {len(labels)} relabelled; classes below k={k}: "
        f"{int((before < k).sum())} before, {int((after < k).sum())} after")
    return labels


def read_labels(path) -> tuple[list[str], np.ndarray]:
    """Read the labels TSV written by ``redistribute_labels`` → (relpaths, final labels)."""
    relpaths, labels = [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["relpath", "argmax", "label"]:
            raise InputError(f"{path}:1: expected header 'relpath<TAB>argmax<TAB>label'")
        for lineno, line in enumerate(f, 2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise InputError(f"{path}:{lineno}: expected 3 tab-separated fields")
            relpaths.append(parts[0])
            labels.append(int(parts[2]))
    return relpaths, np.asarray(labels, dtype=np.int64)
