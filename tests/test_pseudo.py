"""Pseudo-label selection schemes: the recipe's fixed threshold and the class-aware ones, by hand values."""

import numpy as np
import pytest

from webfg.pseudo import check_scheme, select


def test_fixed_keeps_strictly_above_the_threshold_for_every_class():
    conf = np.array([0.45, 0.46, 0.9, 0.2, 0.451])
    pred = np.array([0, 0, 1, 1, 2])
    s = select(conf, pred, 3, "fixed", threshold=0.45)
    assert s.keep.tolist() == [False, True, True, False, True]
    assert s.class_thresholds.tolist() == [0.45, 0.45, 0.45]
    assert s.per_class_counts(pred).tolist() == [1, 1, 1]


def test_adaptive_lowers_the_bar_of_classes_the_models_know_less():
    # class 0: 4 confident predictions (the best learned), class 1: 1, class 2: none
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.35, 0.25, 0.3, 0.1])
    pred = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    s = select(conf, pred, 3, "adaptive", threshold=0.45, min_threshold=0.2)
    beta1 = 1 / 4
    assert s.class_thresholds[0] == pytest.approx(0.45)  # beta 1 -> 1 / (2 - 1) = the threshold itself
    assert s.class_thresholds[1] == pytest.approx(max(0.2, 0.45 * beta1 / (2 - beta1)))
    assert s.class_thresholds[2] == pytest.approx(0.2)  # nobody confident: the floor
    assert s.keep.tolist() == [True, True, True, True, True, True, True, True, True, False]
    fixed = select(conf, pred, 3, "fixed", threshold=0.45)
    assert s.per_class_counts(pred).tolist() == [4, 3, 2] and fixed.per_class_counts(pred).tolist() == [4, 1, 0]


def test_balanced_caps_easy_classes_and_keeps_the_best_of_hard_ones():
    # 12 rows, 3 classes: quota = 0.5 * 12 / 3 = 2 per class
    conf = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.3, 0.25, 0.15, 0.9, 0.9, 0.9, 0.1])
    pred = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    s = select(conf, pred, 3, "balanced", threshold=0.45, min_threshold=0.2, fraction=0.5)
    assert np.flatnonzero(s.keep).tolist() == [0, 1, 5, 6, 8, 9]  # ties (0.9) broken by row order
    assert s.per_class_counts(pred).tolist() == [2, 2, 2]
    assert s.class_thresholds.tolist() == [0.98, 0.25, 0.9]
    few = select(conf, pred, 3, "balanced", min_threshold=0.28, fraction=0.5)
    assert few.keep[[5, 6, 7]].tolist() == [True, False, False] and few.class_thresholds[1] == 0.28


def test_selection_is_invariant_to_float16_storage_of_the_threshold():
    conf = np.float16([0.4500]).astype(np.float64)  # 0.449951171875 once stored as float16
    assert not select(conf, np.array([0]), 1, "fixed", threshold=0.45).keep[0]


@pytest.mark.parametrize(
    "scheme, threshold, floor, fraction, key",
    [
        ("flex", 0.45, 0.2, 0.5, "rounds.a1.pseudo.scheme: 'flex' is not one of"),
        ("fixed", 1.0, 0.2, 0.5, "rounds.a1.pseudo.threshold: 1.0 is outside [0, 1)"),
        ("adaptive", 0.45, 0.5, 0.5, "rounds.a1.pseudo.min_threshold: 0.5 must lie in [0, threshold = 0.45]"),
        ("balanced", 0.45, 0.2, 0.0, "rounds.a1.pseudo.fraction: 0.0 is outside (0, 1]"),
    ],
)
def test_out_of_range_settings_name_the_key(scheme, threshold, floor, fraction, key):
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check_scheme(scheme, threshold, floor, fraction, "rounds.a1.pseudo")
