"""The report's figures, drawn from the pipeline's own TSV/JSON outputs.

Each ``plot_*`` function reads files, writes one PNG (atomically) and returns the
numbers it drew, so tests check the values, not only that a picture exists.
matplotlib runs on the Agg backend: no display is needed on a cluster node.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from webfg.io import InputError, atomic_path, read_json  # noqa: E402


def read_tsv(path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a TSV with a header that must contain ``columns``; an error names the file."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}:1: missing column(s) {missing} (found {reader.fieldnames})")
        return list(reader)


def _save(fig, out_png) -> None:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_history(history_tsv, out_png, title: str = "") -> dict[str, list[float]]:
    """Training loss and validation accuracy per epoch, side by side."""
    rows = read_tsv(history_tsv, ["epoch", "train_loss", "val_accuracy"])
    epochs = [int(r["epoch"]) for r in rows]
    loss = [float(r["train_loss"]) for r in rows]
    acc = [float(r["val_accuracy"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, loss, "o-", color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, acc, "o-", color="tab:blue")
    ax_acc.set(xlabel="epoch", ylabel="val accuracy", title=f"val accuracy (last {acc[-1]:.3f})", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    _save(fig, out_png)
    return {"epoch": epochs, "train_loss": loss, "val_accuracy": acc}


def plot_val_accuracy(prediction_jsons: Sequence, out_png) -> dict[str, float]:
    """Measured val accuracy of every model of every round (what the ensemble weights use).

    ``prediction_jsons`` are the ``results/<round>/infer/<model>/<split>.json`` metadata
    files; the bar is named by their ``model`` field (``round/model``).
    """
    accs = {}
    for path in prediction_jsons:
        meta = read_json(path)
        if "val_accuracy" not in meta or "model" not in meta:
            raise InputError(f"{path}: no 'model'/'val_accuracy' (expected prediction metadata)")
        accs[meta["model"]] = float(meta["val_accuracy"])
    names = list(accs)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.5))
    bars = ax.bar(range(len(names)), [accs[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel="val accuracy", ylim=(0, 1), title="validation accuracy per round and model")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out_png)
    return accs


def plot_pseudo_yield(
    yield_tsv, threshold: float, out_png, title: str = "", selected: tuple[str, int, int] | None = None
) -> dict[str, list[float]]:
    """Share of test images kept as pseudo-labels against a fixed threshold, the config's one
    marked. ``selected`` = (scheme, kept, total): what a class-aware scheme really kept, drawn
    as a level, since only the fixed scheme follows the sweep (its dashed line then marks the
    scheme's base threshold or floor)."""
    rows = read_tsv(yield_tsv, ["threshold", "kept", "fraction"])
    ts = [float(r["threshold"]) for r in rows]
    kept = [int(r["kept"]) for r in rows]
    frac = [float(r["fraction"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(ts, frac, "o-", color="tab:green", ms=3, label="a fixed threshold would keep")
    at = min(range(len(ts)), key=lambda i: abs(ts[i] - threshold))  # the sweep's nearest row
    if selected is None or selected[0] == "fixed":
        label = f"chosen threshold {threshold:g}: {kept[at]} kept ({frac[at]:.0%})"
    else:
        scheme, n_kept, total = selected
        share = n_kept / total if total else 0.0
        ax.axhline(share, color="tab:blue", ls=":", label=f"{scheme} selection: {n_kept} kept ({share:.0%})")
        label = f"{'floor' if scheme == 'balanced' else 'base threshold'} {threshold:g}"
    ax.axvline(threshold, color="tab:red", ls="--", label=label)
    ax.set(
        xlabel="confidence threshold (max probability >)",
        ylabel="fraction kept",
        ylim=(0, 1.02),
        title=title or "pseudo-label yield",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    _save(fig, out_png)
    drawn = {"threshold": ts, "kept": kept, "fraction": frac}
    if selected is not None:
        drawn["selected"] = list(selected)
    return drawn


def plot_class_counts(counts_tsv, out_png, k: int | None = None) -> dict[str, list[int]]:
    """Histogram of images per class in the submission, before and after redistribution."""
    rows = read_tsv(counts_tsv, ["class", "before", "after"])
    before = [int(r["before"]) for r in rows]
    after = [int(r["after"]) for r in rows]
    top = max(before + after)
    bins = range(0, top + 2, max(1, (top + 1) // 40))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(before, bins=bins, alpha=0.6, label="before (ensemble argmax)", color="tab:orange")
    ax.hist(after, bins=bins, alpha=0.6, label="after redistribution", color="tab:blue")
    if k:
        ax.axvline(k, color="black", ls="--", label=f"K = {k}")
    ax.set(xlabel="predicted images per class", ylabel="classes", title=f"class counts ({len(rows)} classes)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    _save(fig, out_png)
    return {"before": before, "after": after}


def removal_reason(reason: str) -> str:
    """The kind of a removal, from the reason texts written by clean.py."""
    if reason.startswith("duplicate of "):
        return "exact duplicate"
    if reason.startswith("conflicting labels"):
        return "duplicate, conflicting labels"
    if reason.startswith("implausible label"):
        return "noisy label (model filter)"
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip() or "other"


def plot_removals(removed_tsvs: Sequence, out_png) -> dict[str, int]:
    """Removed training images per reason, over the cleaning stages' removal lists."""
    counts: Counter[str] = Counter()
    for path in removed_tsvs:
        counts.update(removal_reason(r["reason"]) for r in read_tsv(path, ["path", "reason"]))
    names = sorted(counts, key=lambda n: (-counts[n], n))
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(names), 1) + 1.2))
    bars = ax.barh(names, [counts[n] for n in names], color="tab:purple")
    ax.bar_label(bars, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="removed training images", title=f"cleaning: {sum(counts.values())} removed")
    _save(fig, out_png)
    return dict(counts)


def plot_round_accuracy(summary_tsv, out_png) -> dict[str, dict[str, float]]:
    """Accuracy on each test split per round (from the answer key), then final and submission."""
    rows = read_tsv(summary_tsv, ["stage"])
    columns = [c for c in rows[0] if c.startswith("accuracy_")] if rows else []
    scored = [r for r in rows if any(r.get(c) for c in columns)]
    data = {c.removeprefix("accuracy_"): {r["stage"]: float(r[c]) for r in scored if r.get(c)} for c in columns}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, values in data.items():
        ax.plot(list(values), list(values.values()), "o-", label=split)
    ax.set(ylabel="accuracy (answer key)", title="accuracy per round")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out_png)
    return data
