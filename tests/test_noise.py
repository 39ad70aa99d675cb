"""Out-of-fold noise scoring: fold assignment, assembling the held-out predictions, the filter
rule on train and val."""

import numpy as np
import pytest

from webfg.clean import filter_noisy, implausible_labels
from webfg.io import InputError, load_predictions, read_split_list, save_predictions, write_split_list
from webfg.noise import assemble_out_of_fold, assign_folds, write_folds


def test_every_image_is_held_out_by_exactly_one_fold_with_class_proportions_kept():
    labels = np.repeat([0, 1, 2], [100, 50, 7])
    folds = assign_folds(labels, 5, seed=3)
    assert folds.shape == labels.shape and set(folds.tolist()) == set(range(5))
    for c, n in [(0, 100), (1, 50), (2, 7)]:
        per_fold = np.bincount(folds[labels == c], minlength=5)
        # each fold holds floor or ceil(n / 5) of the class
        assert per_fold.min() >= n // 5 and per_fold.max() <= -(-n // 5), (c, per_fold)
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1  # the odd ones are dealt round the folds, not all to fold 0


def test_folds_are_seeded_and_independent_of_sample_order_within_a_class():
    labels = np.repeat(np.arange(4), 9)
    a = assign_folds(labels, 3, seed=0)
    assert np.array_equal(a, assign_folds(labels, 3, seed=0))
    assert not np.array_equal(a, assign_folds(labels, 3, seed=1))


def test_more_folds_than_the_smallest_class_names_the_key():
    labels = np.repeat([0, 1], [10, 2])
    with pytest.raises(InputError, match=r"clean\.noise_filter\.folds: 3 folds but class 1 has only 2"):
        assign_folds(labels, 3)
    with pytest.raises(InputError, match=r"clean\.noise_filter\.folds: 1 folds; need at least 2"):
        assign_folds(labels, 1)


def test_write_folds_pools_train_and_val_and_never_trains_on_the_held_out(tmp_path):
    train = [(f"train/{c:04d}/{i}.png", c) for c in range(3) for i in range(6)]
    val = [(f"train/{c:04d}/v{i}.png", c) for c in range(3) for i in range(2)]
    write_split_list(tmp_path / "train.txt", train)
    write_split_list(tmp_path / "val.txt", val)
    stats = write_folds(tmp_path / "train.txt", tmp_path / "val.txt", tmp_path / "f", k=4, seed=0, log=lambda m: None)
    assert stats["images"] == 24 and sum(stats["fold_sizes"]) == 24
    held = []
    for f in range(4):
        tr = read_split_list(tmp_path / f"f/fold{f}.train.txt")
        ho = read_split_list(tmp_path / f"f/fold{f}.heldout.txt")
        assert not set(tr) & set(ho) and sorted(tr + ho) == sorted(train + val)
        held += ho
    assert sorted(held) == sorted(train + val)  # each image held out exactly once
    rows = (tmp_path / "f/folds.tsv").read_text().splitlines()
    assert rows[0] == "path\tlabel\tsplit\tfold" and len(rows) == 25
    assert sum(r.split("\t")[2] == "val" for r in rows[1:]) == 6


def test_an_image_in_both_train_and_val_is_refused(tmp_path):
    write_split_list(tmp_path / "train.txt", [("train/a.png", 0), ("train/b.png", 1), ("c.png", 0), ("train/d.png", 1)])
    write_split_list(tmp_path / "val.txt", [("train/a.png", 0)])
    with pytest.raises(InputError, match=r"val\.txt: train/a\.png is in both"):
        write_folds(tmp_path / "train.txt", tmp_path / "val.txt", tmp_path / "f", k=2, log=lambda m: None)


def test_assemble_out_of_fold_stacks_rows_by_path_and_refuses_a_row_scored_twice(tmp_path):
    save_predictions(tmp_path / "f0", np.array([[0.75, 0.25], [0.125, 0.875]]), ["train/b.png", "train/d.png"], {})
    save_predictions(tmp_path / "f1", np.array([[0.5, 0.5]]), ["train/a.png"], {"val_accuracy": 1.0})
    assert assemble_out_of_fold([tmp_path / "f0", tmp_path / "f1"], tmp_path / "oof") == 3
    probs, rows, meta = load_predictions(tmp_path / "oof")
    assert rows == ["train/a.png", "train/b.png", "train/d.png"]
    np.testing.assert_array_equal(probs, [[0.5, 0.5], [0.75, 0.25], [0.125, 0.875]])
    assert meta["fold_val_accuracy"] == [None, 1.0]
    save_predictions(tmp_path / "f2", np.array([[0.5, 0.5]]), ["train/b.png"], {})
    with pytest.raises(InputError, match=r"f2: train/b\.png is also held out by .*f0"):
        assemble_out_of_fold([tmp_path / "f0", tmp_path / "f2"], tmp_path / "oof2")


def test_filter_rule_values():
    label_prob = np.array([0.004, 0.004, 0.3, 0.009, 0.02])
    top = np.array([1, 1, 0, 2, 2])
    top_prob = np.array([0.9, 0.3, 0.6, 0.05, 0.97])
    labels = np.array([0, 0, 0, 0, 0])
    # the recipe: label < 0.05 and another class >= 0.5
    assert implausible_labels(label_prob, top, top_prob, labels, 0.05, 0.5).tolist() == [1, 0, 0, 0, 1]
    # out of fold: the label's own probability alone
    assert implausible_labels(label_prob, top, top_prob, labels, 0.01, 0.0).tolist() == [1, 1, 0, 1, 0]


def test_filter_noisy_filters_val_too_and_lists_the_split(tmp_path):
    write_split_list(tmp_path / "train.txt", [("t0.png", 0), ("t1.png", 1)])
    write_split_list(tmp_path / "val.txt", [("v0.png", 0), ("v1.png", 1)])
    rows = ["v1.png", "t0.png", "v0.png", "t1.png"]
    probs = np.array([[0.995, 0.005], [0.99, 0.01], [0.002, 0.998], [0.3, 0.7]])
    stats = filter_noisy(
        tmp_path / "train.txt",
        probs,
        rows,
        tmp_path / "train_f.txt",
        tmp_path / "rm.tsv",
        max_label_prob=0.01,
        min_top_prob=0.0,
        log=lambda m: None,
        val_list=tmp_path / "val.txt",
        out_val=tmp_path / "val_f.txt",
    )
    assert stats == {"kept": 2, "removed": 0, "val_kept": 0, "val_removed": 2}
    assert read_split_list(tmp_path / "train_f.txt") == [("t0.png", 0), ("t1.png", 1)]
    assert read_split_list(tmp_path / "val_f.txt") == []
    lines = (tmp_path / "rm.tsv").read_text().splitlines()
    assert lines[0] == "path\treason\tsplit\tlabel\tlabel_prob\ttop_class\ttop_prob"
    assert [line.split("\t")[0::2] for line in lines[1:]] == [
        ["v0.png", "val", "0.002", "0.998"],
        ["v1.png", "val", "0.005", "0.995"],
    ]
