"""The report's figures: each plot returns the numbers it drew from the pipeline's files."""

import json

import numpy as np
import pytest
from PIL import Image

from webfg.io import InputError
from webfg.plots import (
    plot_class_counts,
    plot_history,
    plot_pseudo_yield,
    plot_removals,
    plot_round_accuracy,
    plot_val_accuracy,
    removal_reason,
)


def is_picture(path):
    """A PNG that is not one flat colour (something was drawn)."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("L"))
    return pixels.std() > 5


def colour_rows_by_column(path, colour, tolerance=40) -> dict[int, float]:
    """Mean pixel row of ``colour`` in each image column where it appears (row 0 is the top)."""
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.int16)
    mask = np.abs(pixels - np.array(colour)).max(axis=2) < tolerance
    return {int(x): float(np.nonzero(mask[:, x])[0].mean()) for x in np.nonzero(mask.any(axis=0))[0]}


def trend(rows_by_column: dict[int, float]) -> float:
    """Height gained from the curve's left end to its right end, in pixels (up is positive)."""
    xs = sorted(rows_by_column)
    edge = max(1, len(xs) // 10)
    left = np.mean([rows_by_column[x] for x in xs[:edge]])
    right = np.mean([rows_by_column[x] for x in xs[-edge:]])
    return float(left - right)


@pytest.mark.parametrize("loss, acc", [([2.5, 1.5, 0.5], [0.2, 0.5, 0.8]), ([0.5, 1.5, 2.5], [0.8, 0.5, 0.2])])
def test_history_curves_show_the_direction_of_loss_and_accuracy(tmp_path, loss, acc):
    rows = "".join(f"{e}\t{lo}\t{a}\t0.1\n" for e, (lo, a) in enumerate(zip(loss, acc), 1))
    (tmp_path / "h.tsv").write_text("epoch\ttrain_loss\tval_accuracy\tlr\n" + rows)
    plot_history(tmp_path / "h.tsv", tmp_path / "h.png", "r0 / m")
    red = colour_rows_by_column(tmp_path / "h.png", (214, 39, 40))  # tab:red, the loss panel (left)
    blue = colour_rows_by_column(tmp_path / "h.png", (31, 119, 180))  # tab:blue, the accuracy panel (right)
    assert red and blue and max(red) < min(blue)
    assert np.sign(trend(red)) == np.sign(loss[-1] - loss[0]) and abs(trend(red)) > 50
    assert np.sign(trend(blue)) == np.sign(acc[-1] - acc[0]) and abs(trend(blue)) > 50


def test_missing_column_names_the_file(tmp_path):
    (tmp_path / "h.tsv").write_text("epoch\tloss\n1\t2.5\n")
    with pytest.raises(InputError, match=r"h.tsv:1: missing column\(s\) \['train_loss', 'val_accuracy'\]"):
        plot_history(tmp_path / "h.tsv", tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


def test_val_accuracy_bars_keep_the_given_order(tmp_path):
    paths = []
    for name, acc in [("r0/b", 0.4), ("r0/a", 0.6), ("a1/a", 0.7)]:
        paths.append(tmp_path / f"{name.replace('/', '_')}.json")
        paths[-1].write_text(json.dumps({"model": name, "val_accuracy": acc}))
    drawn = plot_val_accuracy(paths, tmp_path / "v.png")
    assert list(drawn.items()) == [("r0/b", 0.4), ("r0/a", 0.6), ("a1/a", 0.7)]
    assert is_picture(tmp_path / "v.png")


def test_pseudo_yield(tmp_path):
    (tmp_path / "y.tsv").write_text("threshold\tkept\tfraction\n0.3\t80\t0.8\n0.45\t50\t0.5\n0.6\t10\t0.1\n")
    drawn = plot_pseudo_yield(tmp_path / "y.tsv", 0.45, tmp_path / "y.png")
    assert drawn["kept"] == [80, 50, 10] and drawn["fraction"] == [0.8, 0.5, 0.1]
    assert is_picture(tmp_path / "y.png")


def test_class_counts(tmp_path):
    (tmp_path / "c.tsv").write_text("class\tbefore\tafter\n0\t30\t20\n1\t5\t15\n2\t10\t10\n")
    drawn = plot_class_counts(tmp_path / "c.tsv", tmp_path / "c.png", k=15)
    assert drawn == {"before": [30, 5, 10], "after": [20, 15, 10]}
    assert is_picture(tmp_path / "c.png")


def test_removals_counted_by_reason(tmp_path):
    (tmp_path / "removed.tsv").write_text(
        "path\treason\n"
        "train/0/a.jpg\tundecodable: OSError: image file is truncated\n"
        "train/0/b.jpg\tundecodable: UnidentifiedImageError: cannot identify\n"
        "train/0/c.jpg\tduplicate of train/0/d.jpg\n"
        "train/0/e.jpg\tconflicting labels among identical files: train/0/e.jpg (0), train/1/e.jpg (1)\n"
        "train/1/e.jpg\tconflicting labels among identical files: train/0/e.jpg (0), train/1/e.jpg (1)\n"
        "train/0/f.jpg\tunreadable: Permission denied\n"
    )
    (tmp_path / "noise.tsv").write_text("path\treason\ntrain/2/g.jpg\timplausible label 2: p=0.01, ensemble says 0\n")
    drawn = plot_removals([tmp_path / "removed.tsv", tmp_path / "noise.tsv"], tmp_path / "r.png")
    assert drawn == {
        "undecodable": 2,
        "exact duplicate": 1,
        "duplicate, conflicting labels": 2,
        "unreadable": 1,
        "noisy label (model filter)": 1,
    }
    assert removal_reason("unreadable: No such file") == "unreadable"
    assert is_picture(tmp_path / "r.png")


def test_round_accuracy_skips_rows_without_accuracy(tmp_path):
    (tmp_path / "s.tsv").write_text(
        "stage\ttrain_images\taccuracy_testa\taccuracy_testb\n"
        "r0\t100\t0.5\t0.4\na1\t150\t0.6\t0.55\nsubmission\t\t\t0.6\nclean_split\t\t\t\n"
    )
    drawn = plot_round_accuracy(tmp_path / "s.tsv", tmp_path / "s.png")
    assert drawn == {"testa": {"r0": 0.5, "a1": 0.6}, "testb": {"r0": 0.4, "a1": 0.55, "submission": 0.6}}
    assert is_picture(tmp_path / "s.png")
