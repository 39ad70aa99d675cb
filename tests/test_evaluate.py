"""Scores against an answer key, on hand examples."""

import math

import pytest

from webfg.evaluate import accuracy, cleaning_scores, load_answers, pseudo_precision
from webfg.io import InputError

ANSWERS = {"testa/a.jpg": 1, "testa/b.jpg": 2, "testa/c.jpg": 3}


def test_accuracy_on_hand_example():
    # a right, b right, c wrong -> 2/3
    assert accuracy(["testa/a.jpg", "testa/b.jpg", "testa/c.jpg"], [1, 2, 0], ANSWERS) == pytest.approx(2 / 3)


def test_accuracy_refuses_a_path_without_answer():
    with pytest.raises(InputError, match="testa/d.jpg"):
        accuracy(["testa/a.jpg", "testa/d.jpg"], [1, 1], ANSWERS)


def test_pseudo_precision():
    assert pseudo_precision([("testa/a.jpg", 1), ("testa/b.jpg", 0)], ANSWERS) == 0.5
    assert math.isnan(pseudo_precision([], ANSWERS))


def test_cleaning_scores():
    # 2 of the 3 removed are noisy; 2 of the 4 noisy were found
    scores = cleaning_scores({"a", "b", "c"}, {"b", "c", "d", "e"})
    assert scores == {"precision": pytest.approx(2 / 3), "recall": 0.5, "removed": 3, "noisy": 4}
    empty = cleaning_scores(set(), {"a"})
    assert math.isnan(empty["precision"]) and empty["recall"] == 0.0


def test_load_answers(tmp_path):
    key = tmp_path / "answers.txt"
    key.write_text("testa/a b.jpg 1\ntesta/c.jpg 4999\n", encoding="utf-8")
    assert load_answers(key) == {"testa/a b.jpg": 1, "testa/c.jpg": 4999}
    key.write_text("testa/a.jpg 1\ntesta/a.jpg 2\n", encoding="utf-8")
    with pytest.raises(InputError, match="testa/a.jpg"):
        load_answers(key)
