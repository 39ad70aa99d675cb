"""Scores against an answer key, for the demo's summary table.

The challenge's test labels are hidden; on the demo data we hold an answer key
(a labelled split list) and the list of images we made noisy, so each stage can
be measured: final accuracy, pseudo-label precision, and how well cleaning
found the noisy images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from webfg.io import InputError, read_split_list


def load_answers(path: str | os.PathLike) -> dict[str, int]:
    """Read an answer key (labelled split list) into ``{relpath: label}``.

    A relpath listed twice makes the key ambiguous, so it raises InputError.
    """
    answers: dict[str, int] = {}
    for relpath, label in read_split_list(path):
        if relpath in answers:
            raise InputError(f"{path}: {relpath!r} is listed more than once")
        answers[relpath] = label
    return answers


def _answer(answers: dict[str, int], relpath: str) -> int:
    try:
        return answers[relpath]
    except KeyError:
        raise InputError(f"no answer for {relpath!r} in the answer key") from None


def accuracy(relpaths: Sequence[str], labels: Sequence[int], answers: dict[str, int]) -> float:
    """Fraction of ``labels`` equal to the answer of their relpath (nan when empty).

    Every relpath must have an answer (InputError otherwise): silently skipping
    rows would inflate or deflate the score.
    """
    if len(relpaths) != len(labels):
        raise ValueError(f"{len(relpaths)} relpaths for {len(labels)} labels")
    if not relpaths:
        return math.nan
    correct = sum(_answer(answers, r) == int(y) for r, y in zip(relpaths, labels))
    return correct / len(relpaths)


def pseudo_precision(pseudo: Sequence[tuple[str, int]], answers: dict[str, int]) -> float:
    """Fraction of pseudo-labels that are right (nan when none were kept)."""
    return accuracy([r for r, _ in pseudo], [y for _, y in pseudo], answers)


def cleaning_scores(removed_paths: set[str], noisy_paths: set[str]) -> dict:
    """Precision and recall of data cleaning against the known noisy images.

    precision = |removed & noisy| / |removed|, recall = |removed & noisy| / |noisy|
    (nan when the denominator is 0); ``removed`` and ``noisy`` are the set sizes.
    """
    hit = len(set(removed_paths) & set(noisy_paths))
    removed, noisy = len(removed_paths), len(noisy_paths)
    return {
        "precision": hit / removed if removed else math.nan,
        "recall": hit / noisy if noisy else math.nan,
        "removed": removed,
        "noisy": noisy,
    }
