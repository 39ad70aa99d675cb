"""The original's result pickles: restricted import and the legacy workflow target
(the two snakemake tests take ~30 s together and need the CPU lock when run alone)."""

import os
import pickle

import numpy as np
import pytest
from runner import run_snakemake

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
    pkl = write_pickle(
        tmp_path / "vit-l-arc.3st-7620.pkl",
        [{"filename": "a b.jpg", "scores": scores[0]}, {"filename": "c.jpg", "scores": scores[1]}],
        protocol,
    )
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
        (
            [{"filename": "a.jpg", "scores": np.array([0.5, 0.5])}, {"filename": "b.jpg", "scores": np.ones(3)}],
            "different lengths",
        ),
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


def test_import_dump_all_dict_and_name_without_accuracy(tmp_path):
    # the ensembled {filename: scores} dict that re-distribute-label.py reads
    pkl = write_pickle(tmp_path / "ensemble.pkl", {"a.jpg": np.array([0.25, 0.75]), "b.jpg": np.array([1.0, 0.0])})
    meta = import_legacy(pkl, tmp_path / "m", "testb")
    probs, rows, _ = load_predictions(tmp_path / "m")
    assert rows == ["testb/a.jpg", "testb/b.jpg"] and probs.tolist() == [[0.25, 0.75], [1.0, 0.0]]
    assert meta["val_accuracy"] is None


def test_scores_that_are_not_probabilities_are_refused(tmp_path):
    pkl = write_pickle(
        tmp_path / "m-7000.pkl",
        [{"filename": "a.jpg", "scores": np.array([0.5, 0.5])}, {"filename": "b.jpg", "scores": np.array([2.0, 3.0])}],
    )
    with pytest.raises(InputError, match=r"m-7000\.pkl: row 1 \(b\.jpg\).*does not sum"):
        read_legacy_result(pkl)


# ------------------------------------------------ the legacy workflow, end to end


def _snakemake(workdir, *args):
    return run_snakemake(workdir, *args, check=False)


def _legacy_folder(tmp_path, rng, n=12, c=4):
    """Three result pickles in the original's formats and names (dots in the folder,
    a threshold in the name), the scores of each, and the accuracies in their names."""
    folder = tmp_path / "work.v2" / "results"
    folder.mkdir(parents=True)
    names = [f"img {i}.jpg" for i in range(n)]
    files = {"vit-448-arc.3st-7620.pkl": 0.7620, "mae-vit-ce-semi-0.4-7471.pkl": 0.7471, "swin-b-7410.pkl": 0.7410}
    scores = {}
    for j, fname in enumerate(files):
        s = rng.dirichlet(np.full(c, 0.5), n).astype(np.float32)
        s[:, 0] += 0.3  # every model favours class 0, so greedy has work to do
        s /= s.sum(1, keepdims=True)
        scores[fname] = s
        if j == 2:  # the column layout
            write_pickle(folder / fname, {"filename": names, "scores": s})
        else:
            write_pickle(folder / fname, [{"filename": f, "scores": s[i]} for i, f in enumerate(names)])
    return folder, names, files, scores


@pytest.mark.dag
def test_legacy_workflow_from_pickles_to_submission_and_pseudo(tmp_path):
    """snakemake on a config holding only `legacy` (~25 s: 8 jobs)."""
    from webfg.postprocess import ensemble_weights, read_labels, redistribute_greedy

    folder, names, accs, scores = _legacy_folder(tmp_path, np.random.default_rng(0))
    (tmp_path / "legacy.yaml").write_text(
        f"legacy:\n  results_dir: {folder}\n  power: 25\n  pseudo_threshold: 0.5\n"
        "  redistribute: {method: greedy, k: 3}\n"
    )
    proc = _snakemake(tmp_path, "--configfile", str(tmp_path / "legacy.yaml"))
    assert proc.returncode == 0, proc.stderr[-4000:]

    # weighted ensemble = sum w_i P_i / sum w_i with w from the names
    w = ensemble_weights(list(accs.values()), 25)
    expected = sum(wi * scores[f] for wi, f in zip(w, accs)) / w.sum()
    ens, rows, meta = load_predictions(tmp_path / "results/legacy/ensemble")
    assert rows == [f"testb/{n}" for n in names]
    np.testing.assert_allclose(ens.astype(np.float64), expected, atol=2e-3)
    # final labels = the greedy redistribution of that ensemble; submit.csv carries them
    rows_l, labels = read_labels(tmp_path / "results/legacy/labels.tsv")
    np.testing.assert_array_equal(labels, redistribute_greedy(ens, 3))
    assert (tmp_path / "results/legacy/submit.csv").read_text() == "".join(
        f"{n},{int(y):04d}\n" for n, y in zip(names, labels)
    )
    # pseudo.txt: the plain mean above the threshold, in the original's `testb/<file> <label>`
    mean = sum(scores.values()) / 3
    keep = [i for i in range(len(names)) if mean[i].max() > 0.5]
    assert keep and (tmp_path / "results/legacy/pseudo.txt").read_text() == "".join(
        f"testb/{names[i]} {int(mean[i].argmax())}\n" for i in keep
    )


@pytest.mark.dag
def test_legacy_workflow_refuses_a_pickle_with_code(tmp_path):
    folder, *_ = _legacy_folder(tmp_path, np.random.default_rng(1))
    write_pickle(folder / "evil-7000.pkl", [{"filename": "a.jpg", "scores": RunsCode()}])
    (tmp_path / "legacy.yaml").write_text(f"legacy: {{results_dir: {folder}}}\n")
    proc = _snakemake(tmp_path, "--configfile", str(tmp_path / "legacy.yaml"))
    assert proc.returncode != 0
    log = (tmp_path / "logs/legacy/import/evil-7000.log").read_text()
    assert "evil-7000.pkl: refusing to unpickle" in log
    assert not (tmp_path / "results/legacy/submit.zip").exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "legacy.yaml").write_text(f"legacy: {{results_dir: {tmp_path / 'empty'}}}\n")
    proc = _snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "legacy.yaml"))
    assert proc.returncode != 0 and "no *.pkl result files" in proc.stdout + proc.stderr
