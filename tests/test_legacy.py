import os
import pickle

import numpy as np
import pytest

from webfg.cli import main
from webfg.io import InputError, load_predictions
from webfg.legacy import import_legacy, read_legacy_result
from webfg.postprocess import accuracy_from_filename


def write_pickle(path, obj, protocol=4):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_import_list_of_dicts_as_prediction(tmp_path, protocol):
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)
    pkl = write_pickle(tmp_path / "vit-l-arc.3st-7620.pkl",
                       [{"filename": "a b.jpg", "scores": scores[0]}, {"filename": "c.jpg", "scores": scores[1]}],
                       protocol)
    meta = import_legacy(pkl, tmp_path / "out" / "m", "testb")
    probs, rows, saved = load_predictions(tmp_path / "out" / "m")
    np.testing.assert_allclose(probs.astype(np.float32), scores, atol=1e-3)
    assert rows == ["testb/a b.jpg", "testb/c.jpg"]
    assert meta["val_accuracy"] == saved["val_accuracy"] == 0.762


def test_import_column_layout(tmp_path):
    pkl = write_pickle(tmp_path / "swin-7400.pkl", {"filename": ["x.jpg"], "scores": np.array([[0.25, 0.75]])})
    names, scores = read_legacy_result(pkl)
    assert names == ["x.jpg"] and scores.tolist() == [[0.25, 0.75]]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pkl = write_pickle(tmp_path / "evil-7000.pkl", [{"filename": "a.jpg", "scores": RunsCode()}])
    with pytest.raises(InputError, match=r"evil-7000\.pkl: refusing to unpickle (posix|os)\.system"):
        read_legacy_result(pkl)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "obj, message",
    [
        ([{"filename": "a.jpg", "scores": np.array([np.nan, 1.0])}], "NaN, inf or negative"),
        ([{"filename": "a.jpg", "scores": np.array([0.5, 0.5])}, {"filename": "b.jpg", "scores": np.ones(3)}],
         "different lengths"),
        ([{"name": "a.jpg", "scores": np.ones(2)}], "no 'filename' key"),
        ({"something": 1}, "expected a list of"),
        ([{"filename": "a.jpg", "scores": np.array([object()], dtype=object)}], "object array|refusing"),
    ],
)
def test_bad_legacy_files_name_the_file(tmp_path, obj, message):
    pkl = write_pickle(tmp_path / "m-7000.pkl", obj)
    with pytest.raises(InputError, match=message):
        read_legacy_result(pkl)


def test_truncated_pickle(tmp_path):
    pkl = tmp_path / "m-7000.pkl"
    pkl.write_bytes(pickle.dumps([{"filename": "a.jpg", "scores": np.ones(2)}])[:20])
    with pytest.raises(InputError, match=r"m-7000\.pkl: not a readable pickle"):
        read_legacy_result(pkl)


@pytest.mark.parametrize(
    "name, acc",
    [("vit-7473.pkl", 0.7473), ("semi-3st-thres-0.4-7471.pkl", 0.7471), ("runs.v2/swin-b-7410.pkl", 0.741)],
)
def test_accuracy_from_legacy_names(name, acc):
    assert accuracy_from_filename(name) == pytest.approx(acc)


def test_import_legacy_command(tmp_path):
    pkl = write_pickle(tmp_path / "m-7500.pkl", [{"filename": "a.jpg", "scores": np.array([0.5, 0.5])}])
    main(["import-legacy", str(pkl), "--out-dir", str(tmp_path / "legacy")])
    assert load_predictions(tmp_path / "legacy" / "m-7500")[2]["val_accuracy"] == 0.75
