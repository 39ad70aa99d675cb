import numpy as np
import pytest

from webfg.io import InputError, atomic_path, load_predictions, read_split_list, save_predictions, write_split_list


def test_split_list_splits_on_last_space_and_keeps_unicode(tmp_path):
    p = tmp_path / "list.txt"
    p.write_text("train/0001/a b é.jpg 1\ntrain/0002/c.png 2\n\n", encoding="utf-8")
    assert read_split_list(p, num_classes=3) == [("train/0001/a b é.jpg", 1), ("train/0002/c.png", 2)]


@pytest.mark.parametrize(
    "line, message",
    [
        ("train/a.jpg", "expected '<path> <label>'"),
        ("train/a.jpg x", "not an integer"),
        ("train/a.jpg 7", r"out of range \[0, 3\)"),
        ("../etc/passwd 1", "stay inside"),
        ("/abs/a.jpg 1", "stay inside"),
    ],
)
def test_split_list_errors_name_file_and_line(tmp_path, line, message):
    p = tmp_path / "meta.txt"
    p.write_text(f"train/ok.jpg 0\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"meta\.txt:2: .*{message}"):
        read_split_list(p, num_classes=3)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_predictions_round_trip_float16_memmap(tmp_path):
    probs = np.array([[0.25, 0.75], [0.5, 0.5]])
    save_predictions(tmp_path / "m", probs, ["testa/x y.jpg", "testa/z.jpg"], {"val_accuracy": 0.5})
    loaded, rows, meta = load_predictions(tmp_path / "m")
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, probs)
    assert rows == ["testa/x y.jpg", "testa/z.jpg"]
    assert meta["val_accuracy"] == 0.5 and meta["num_classes"] == 2


def test_predictions_refuse_pickled_npy(tmp_path):
    np.save(tmp_path / "m.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    write_split_list(tmp_path / "m.rows.txt", ["testa/x.jpg"])
    with pytest.raises(InputError, match=r"m\.npy"):
        load_predictions(tmp_path / "m")
