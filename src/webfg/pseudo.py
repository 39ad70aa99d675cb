"""Which test images become pseudo-labels: the recipe's fixed threshold and two class-aware schemes.

Every scheme sees the ensemble's confidence (row max) and prediction (row argmax) of each
unlabelled image and returns a keep mask plus the threshold it applied to each class:

- ``fixed`` (the recipe): keep ``confidence > threshold``, one number for every class.
  Classes the models find hard get few or no pseudo-labels, easy ones many.
- ``adaptive`` (after FlexMatch, Zhang et al. 2021): each class's threshold is scaled by how
  well the models already learned it, measured by the number of its confident predictions
  ``sigma_c`` (``confidence > threshold``). With ``beta_c = sigma_c / max_c sigma_c`` the class
  threshold is ``threshold * beta_c / (2 - beta_c)`` (FlexMatch's convex mapping), never below
  ``min_threshold``. A class nobody predicts confidently is let in at ``min_threshold``.
- ``balanced``: a class-balanced quota. Each predicted class keeps at most
  ``fraction * N / C`` of its most confident images (N images, C classes), all of them
  above ``min_threshold``: easy classes cannot flood the list, hard ones keep their best.

Confidences are compared in float64 (see ``postprocess.pseudo_labels``); ties at a
quota's edge are broken by row order, so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from webfg.io import load_predictions, write_split_list, write_text
from webfg.postprocess import confidence_and_label

SCHEMES = ("fixed", "adaptive", "balanced")


@dataclass(frozen=True)
class Selection:
    keep: np.ndarray  # bool (N,): rows that become pseudo-labels
    # float64 (C,): each class's bar. fixed/adaptive: a row predicted as c is kept when its confidence
    # exceeds it; balanced: min_threshold, or the lowest kept confidence where c's quota was filled
    class_thresholds: np.ndarray

    def per_class_counts(self, predicted: np.ndarray) -> np.ndarray:
        """Pseudo-labels kept per class (int64, length C)."""
        return np.bincount(predicted[self.keep], minlength=len(self.class_thresholds)).astype(np.int64)


def check_scheme(scheme: str, threshold: float, min_threshold: float, fraction: float, where: str) -> None:
    """Refuse settings out of range, naming the config key (``where`` is e.g. ``rounds.a1.pseudo``)."""
    if scheme not in SCHEMES:
        raise ValueError(f"{where}.scheme: {scheme!r} is not one of {list(SCHEMES)}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"{where}.threshold: {threshold} is outside [0, 1)")
    if scheme == "adaptive" and not 0.0 <= min_threshold <= threshold:
        raise ValueError(f"{where}.min_threshold: {min_threshold} must lie in [0, threshold = {threshold}]")
    if scheme == "balanced" and not 0.0 <= min_threshold < 1.0:  # the quota's floor; threshold is unused
        raise ValueError(f"{where}.min_threshold: {min_threshold} is outside [0, 1)")
    if scheme == "balanced" and not 0.0 < fraction <= 1.0:
        raise ValueError(f"{where}.fraction: {fraction} is outside (0, 1]")


def select(
    confidence: np.ndarray,
    predicted: np.ndarray,
    num_classes: int,
    scheme: str = "fixed",
    threshold: float = 0.45,
    min_threshold: float = 0.2,
    fraction: float = 0.8,
) -> Selection:
    """The rows to pseudo-label under ``scheme`` (see the module docstring for each rule)."""
    check_scheme(scheme, threshold, min_threshold, fraction, "pseudo")
    confidence = np.asarray(confidence, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if confidence.shape != predicted.shape or confidence.ndim != 1:
        raise ValueError(f"confidence {confidence.shape} and predicted {predicted.shape} must be equal 1-D shapes")
    if predicted.size and (predicted.min() < 0 or predicted.max() >= num_classes):
        raise ValueError(f"predicted classes must lie in [0, {num_classes})")
    if scheme == "fixed":
        thresholds = np.full(num_classes, threshold)
        return Selection(confidence > threshold, thresholds)
    if scheme == "adaptive":
        sigma = np.bincount(predicted[confidence > threshold], minlength=num_classes).astype(np.float64)
        beta = sigma / sigma.max() if sigma.max() > 0 else np.zeros(num_classes)
        thresholds = np.maximum(threshold * beta / (2.0 - beta), min_threshold)
        return Selection(confidence > thresholds[predicted], thresholds)
    # balanced: the quota's most confident rows of each predicted class, above the floor
    quota = max(1, int(round(fraction * confidence.size / num_classes)))
    keep = np.zeros(confidence.size, dtype=bool)
    thresholds = np.full(num_classes, min_threshold)
    order = np.lexsort((np.arange(confidence.size), -confidence, predicted))  # by class, then most confident
    starts = np.searchsorted(predicted[order], np.arange(num_classes + 1))
    for c in range(num_classes):
        rows = order[starts[c] : starts[c + 1]]
        rows = rows[confidence[rows] > min_threshold][:quota]
        keep[rows] = True
        if len(rows) == quota:  # the quota, not the floor, was the binding limit
            thresholds[c] = confidence[rows[-1]]
    return Selection(keep, thresholds)


# the yield table's sweep: how many rows a fixed threshold would keep, next to the scheme's choice
YIELD_THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)


def yield_table(confidence: np.ndarray) -> str:
    """TSV ``threshold kept fraction``: rows above each threshold of YIELD_THRESHOLDS."""
    n = max(1, confidence.size)
    lines = ["threshold\tkept\tfraction\n"]
    for t in YIELD_THRESHOLDS:
        kept = int(np.count_nonzero(confidence > t))
        lines.append(f"{t:g}\t{kept}\t{kept / n:.4f}\n")
    return "".join(lines)


def make_pseudo(
    ensemble_stem,
    out_list,
    out_yield,
    scheme: str = "fixed",
    threshold: float = 0.45,
    min_threshold: float = 0.2,
    fraction: float = 0.8,
    log=print,
) -> Selection:
    """The pseudo-label stage: an ensemble's predictions -> ``out_list`` (``relpath label`` of
    the selected rows, in row order) and ``out_yield`` (yield_table). The rule and
    ``webfg pseudo`` both call this."""
    probs, relpaths, _ = load_predictions(ensemble_stem)
    confidence, predicted = confidence_and_label(probs)
    chosen = select(confidence, predicted, probs.shape[1], scheme, threshold, min_threshold, fraction)
    rows = np.flatnonzero(chosen.keep)
    write_split_list(out_list, [(relpaths[i], int(predicted[i])) for i in rows])
    write_text(out_yield, yield_table(confidence))
    per_class = chosen.per_class_counts(predicted)
    log(
        f"{scheme}: kept {rows.size} of {len(relpaths)}; per class min {per_class.min()}, "
        f"max {per_class.max()}, {int(np.count_nonzero(per_class == 0))} classes without any"
    )
    return chosen
