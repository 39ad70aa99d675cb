"""Post-processing against hand-computed values (SPEC A4); ~10 s (torch import, one small synthetic set)."""

import json
import zipfile

import numpy as np
import pytest

from webfg.io import InputError, load_predictions, save_predictions
from webfg.postprocess import (
    accuracy_from_filename,
    balance_duals,
    class_counts,
    ensemble_predictions,
    ensemble_weights,
    merge_meta,
    pseudo_labels,
    pseudo_yield,
    redistribute_balanced,
    redistribute_greedy,
    top_candidates,
    write_submission,
)

F16 = np.float16


# ----------------------------------------------------------------- weights


def test_weights_formula_on_hand_example():
    # (0.5/0.5)^2 = 1, (0.6/0.5)^2 = 1.44
    np.testing.assert_allclose(ensemble_weights([0.5, 0.6], 2), [1.0, 1.44])
    assert ensemble_weights([0.5, 0.6], 2).dtype == np.float64


def test_weights_power_zero_is_plain_mean():
    np.testing.assert_array_equal(ensemble_weights([0.7, 0.8, 0.9], 0), [1.0, 1.0, 1.0])


@pytest.mark.parametrize("accs", [[0.5, 0.0], [0.5, 1.2], [-0.1, 0.5]])
def test_weights_reject_accuracies_outside_unit_interval(accs):
    with pytest.raises(ValueError):
        ensemble_weights(accs, 25)


@pytest.mark.parametrize(
    "name, acc",
    [
        ("vit-l-arc-7620.pkl", 0.7620),
        ("/runs/b3.final/swin-v2-l-8012.pkl", 0.8012),  # a dot in a folder broke the original's parser
        ("swin-0975", 0.0975),
    ],
)
def test_accuracy_from_filename(name, acc):
    assert accuracy_from_filename(name) == pytest.approx(acc)


@pytest.mark.parametrize("name", ["vit-l.pkl", "vit-7620-final.pkl", "vit-12345.pkl"])
def test_accuracy_from_filename_names_the_file_when_absent(name):
    with pytest.raises(InputError, match=name):
        accuracy_from_filename(name)


# ---------------------------------------------------------------- ensemble


def _save(tmp_path, name, probs, rows=None):
    rows = rows or [f"testa/{i}.jpg" for i in range(len(probs))]
    stem = tmp_path / name
    save_predictions(stem, np.asarray(probs, dtype=F16), rows, {"model": name})
    return stem


def test_ensemble_equals_hand_sum_across_chunk_boundary(tmp_path):
    a = _save(tmp_path, "a", [[0.5, 0.25, 0.25], [0, 1, 0], [0.125, 0.375, 0.5]])
    b = _save(tmp_path, "b", [[0.25, 0.5, 0.25], [0.5, 0.5, 0], [0.75, 0.125, 0.125]])
    # out = (1*A + 3*B) / (1 + 3), row by row; chunk_rows=2 splits the 3 rows 2 + 1
    ensemble_predictions([a, b], [1.0, 3.0], tmp_path / "ens", chunk_rows=2)
    probs, rows, meta = load_predictions(tmp_path / "ens")
    assert probs.dtype == np.float16
    np.testing.assert_array_equal(probs, [[0.3125, 0.4375, 0.25], [0.375, 0.625, 0.0], [0.59375, 0.1875, 0.21875]])
    assert rows == ["testa/0.jpg", "testa/1.jpg", "testa/2.jpg"]
    assert meta["weights"] == [1.0, 3.0] and meta["num_rows"] == 3 and meta["num_classes"] == 3


def test_ensemble_of_three_with_uneven_chunks(tmp_path):
    # 7 rows in chunks of 3 (3 + 3 + 1); every row differs so a misplaced chunk shows.
    grid = np.arange(7 * 4, dtype=np.float64).reshape(7, 4) / 64  # exact in float16
    models = [grid, grid[::-1], np.full((7, 4), 0.25)]
    stems = [_save(tmp_path, f"m{i}", p) for i, p in enumerate(models)]
    weights = [1.0, 1.5, 3.0]
    ensemble_predictions(stems, weights, tmp_path / "ens", chunk_rows=3, check_sums=False)
    expected = (1.0 * models[0] + 1.5 * models[1] + 3.0 * models[2]) / 5.5
    probs, _, _ = load_predictions(tmp_path / "ens", check=False)  # rows are not distributions
    np.testing.assert_allclose(probs.astype(np.float64), expected, rtol=1e-3)
    assert probs[0, 0] == pytest.approx((0 + 1.5 * grid[6, 0] + 0.75) / 5.5, rel=1e-3)


def test_ensemble_leaves_only_its_three_files(tmp_path):
    a = _save(tmp_path, "a", [[0.5, 0.5]])
    ensemble_predictions([a, a], [1.0, 1.0], tmp_path / "out" / "ens", chunk_rows=1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ens.json", "ens.npy", "ens.rows.txt"]
    assert json.loads((tmp_path / "out" / "ens.json").read_text())["members"] == [str(a), str(a)]


def test_ensemble_refuses_different_row_order_naming_both_files(tmp_path):
    a = _save(tmp_path, "a", [[0.5, 0.5], [0.25, 0.75]], rows=["x.jpg", "y.jpg"])
    b = _save(tmp_path, "b", [[0.5, 0.5], [0.25, 0.75]], rows=["y.jpg", "x.jpg"])
    with pytest.raises(InputError, match=r"b\.rows\.txt.*a\.rows\.txt"):
        ensemble_predictions([a, b], [1.0, 1.0], tmp_path / "ens")
    assert not list(tmp_path.glob("ens*")) and not list(tmp_path.glob(".ens*"))


def test_ensemble_refuses_different_class_counts(tmp_path):
    a = _save(tmp_path, "a", [[0.5, 0.5]])
    b = _save(tmp_path, "b", [[0.5, 0.25, 0.25]])
    with pytest.raises(InputError, match=r"b\.npy.*a\.npy"):
        ensemble_predictions([a, b], [1.0, 1.0], tmp_path / "ens")


def test_ensemble_with_power_25_weights_stays_a_distribution(tmp_path):
    # (0.9/0.3)^25 ~ 8.5e11: the original's sum/M would overflow float16; sum/sum(w) cannot
    a = _save(tmp_path, "a", [[0.75, 0.25]])
    b = _save(tmp_path, "b", [[0.25, 0.75]])
    weights = ensemble_weights([0.3, 0.9], 25)
    ensemble_predictions([a, b], weights, tmp_path / "ens")
    probs, _, _ = load_predictions(tmp_path / "ens")
    w = weights / weights.sum()
    np.testing.assert_allclose(
        probs[0].astype(float), [0.75 * w[0] + 0.25 * w[1], 0.25 * w[0] + 0.75 * w[1]], atol=1e-3
    )
    assert np.isfinite(probs).all() and probs[0].sum() == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------- pseudo-labels


def test_pseudo_labels_threshold_is_strict(tmp_path):
    stem = _save(
        tmp_path,
        "p",
        [
            [0.5, 0.25, 0.25],  # max exactly 0.5: dropped at threshold 0.5
            [0.125, 0.625, 0.25],  # kept, label 1
            [0.25, 0.25, 0.5],  # exactly 0.5 again: dropped
            [0.0, 0.25, 0.75],  # kept, label 2
        ],
    )
    probs, rows, _ = load_predictions(stem)  # a memmap
    assert pseudo_labels(probs, rows, 0.5) == [("testa/1.jpg", 1), ("testa/3.jpg", 2)]
    assert pseudo_labels(probs, rows, 0.49) == [(r, y) for r, y in zip(rows, [0, 1, 2, 2])]


def test_pseudo_labels_compare_in_float64_not_float16():
    # float16(0.3) = 0.300048828125 > 0.3, so the row IS above the threshold; a
    # float16 comparison would round 0.3 to that same value and drop it.
    probs = np.array([[F16(0.3), F16(0.2)]], dtype=F16)
    assert pseudo_labels(probs, ["a.jpg"], 0.3) == [("a.jpg", 0)]


def test_pseudo_yield_counts_per_threshold():
    probs = np.array([[0.5, 0.5], [0.75, 0.25], [0.125, 0.875], [0.625, 0.375]], dtype=F16)
    # row maxima 0.5, 0.75, 0.875, 0.625
    np.testing.assert_array_equal(pseudo_yield(probs, [0.0, 0.5, 0.7, 0.875]), [4, 3, 2, 0])


def test_merge_meta_concatenates_and_refuses_duplicates():
    base = [("train/0001/a.jpg", 1)]
    assert merge_meta(base, [("testa/b.jpg", 3)], [("testb/c.jpg", 0)]) == [
        ("train/0001/a.jpg", 1),
        ("testa/b.jpg", 3),
        ("testb/c.jpg", 0),
    ]
    with pytest.raises(InputError, match="testa/b.jpg"):
        merge_meta(base, [("testa/b.jpg", 3)], [("testa/b.jpg", 4)])


# ---------------------------------------------------------- redistribution


def test_class_counts():
    np.testing.assert_array_equal(class_counts(np.array([0, 2, 2, 1]), 4), [1, 1, 2, 0])
    with pytest.raises(ValueError):
        class_counts(np.array([0, 4]), 4)


def test_greedy_relabels_twice_last_wins():
    # N=6, C=3, K=2. argmax = [0, 0, 0, 0, 1, 2] -> counts [4, 1, 1]; classes 1 and 2
    # each need 2 - 1 = 1 row, visited 1 then 2.
    probs = np.array(
        [
            [0.40, 0.32, 0.28],  # r0
            [0.60, 0.30, 0.10],  # r1
            [0.70, 0.10, 0.20],  # r2
            [0.80, 0.15, 0.05],  # r3
            [0.10, 0.70, 0.20],  # r4 (predicted 1: masked for class 1 despite P1=.7)
            [0.20, 0.10, 0.70],  # r5
        ],
        dtype=F16,
    )
    # class 1: P1 over rows not predicted 1 -> r0 .32 is highest -> r0 := 1
    # class 2: P2 over rows not predicted 2 -> r0 .28 is highest -> r0 := 2 (last wins)
    labels = redistribute_greedy(probs, 2)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [2, 0, 0, 0, 1, 2])
    # class 1 still ends below K: its count was taken once at the start.
    np.testing.assert_array_equal(class_counts(labels, 3), [3, 1, 2])


def test_greedy_donor_class_can_fall_below_k():
    # N=6, C=3, K=2. argmax = [0, 0, 1, 1, 1, 1] -> counts [2, 4, 0]; class 2 needs 2.
    probs = np.array(
        [
            [0.50, 0.10, 0.40],  # r0
            [0.45, 0.20, 0.35],  # r1
            [0.10, 0.60, 0.30],  # r2
            [0.10, 0.70, 0.20],  # r3
            [0.05, 0.80, 0.15],  # r4
            [0.05, 0.85, 0.10],  # r5
        ],
        dtype=F16,
    )
    # top-2 P2: r0 .40, r1 .35 -> both from class 0, which drops 2 -> 0 and is not revisited
    labels = redistribute_greedy(probs, 2)
    np.testing.assert_array_equal(labels, [2, 2, 1, 1, 1, 1])
    np.testing.assert_array_equal(class_counts(labels, 3), [0, 4, 2])


def test_greedy_mask_and_counts_are_stale():
    # N=5, C=3, K=2. argmax = [0, 0, 0, 1, 2] -> counts [3, 1, 1]; order 1, 2.
    probs = np.array(
        [
            [0.8, 0.1, 0.1],  # r0
            [0.6, 0.1, 0.3],  # r1
            [0.7, 0.2, 0.1],  # r2
            [0.1, 0.8, 0.1],  # r3
            [0.1, 0.4, 0.5],  # r4
        ],
        dtype=F16,
    )
    # class 1 (needs 1): P1 of r0,r1,r2,r4 = .1,.1,.2,.4 -> r4 := 1
    # class 2 (needs 2-1 = 1, its stale count): r4 is still masked because its ORIGINAL
    # argmax was 2, so P2 of r0..r3 = .1,.3,.1,.1 -> r1 := 2.
    # (Masking by current labels would take r4 back instead.)
    np.testing.assert_array_equal(redistribute_greedy(probs, 2), [0, 2, 0, 1, 1])


def test_greedy_visits_classes_grouped_by_count_like_the_original():
    # N=6, C=4, K=2. argmax = [0, 2, 3, 3, 3, 3] -> counts [1, 0, 1, 4].
    # The original groups deficient classes by count in order of first appearance
    # ({1: [0, 2], 0: [1]}), so it visits 0, 2, 1 -- not 0, 1, 2.
    probs = np.array(
        [
            [0.70, 0.10, 0.10, 0.10],  # r0
            [0.10, 0.10, 0.70, 0.10],  # r1
            [0.05, 0.30, 0.25, 0.40],  # r2
            [0.05, 0.25, 0.10, 0.60],  # r3
            [0.20, 0.05, 0.05, 0.70],  # r4
            [0.10, 0.10, 0.10, 0.70],  # r5
        ],
        dtype=F16,
    )
    # class 0 (needs 1): P0 of r1..r5 = .1,.05,.05,.2,.1 -> r4 := 0
    # class 2 (needs 1): P2 of r0,r2..r5 = .1,.25,.1,.05,.1 -> r2 := 2
    # class 1 (needs 2): P1 of all rows -> r2 .30, r3 .25 -> r2 := 1, r3 := 1
    # (visiting 0, 1, 2 would leave r2 as 2)
    np.testing.assert_array_equal(redistribute_greedy(probs, 2), [0, 2, 1, 1, 0, 3])


def test_greedy_ties_go_to_the_lower_row():
    # argmax = [0, 0, 0, 0] -> class 1 needs 1; r1 and r3 tie on P1 = .375
    probs = np.array([[0.75, 0.25], [0.625, 0.375], [0.875, 0.125], [0.625, 0.375]], dtype=F16)
    np.testing.assert_array_equal(redistribute_greedy(probs, 1), [0, 1, 0, 0])


def test_greedy_leaves_balanced_predictions_alone():
    probs = np.array([[0.75, 0.25], [0.25, 0.75]], dtype=F16)
    np.testing.assert_array_equal(redistribute_greedy(probs, 1), [0, 1])


# -------------------------------------------------------------- submission


def test_submission_bytes_and_zip(tmp_path):
    csv_path, zip_path = tmp_path / "pred_results.csv", tmp_path / "pred_results.zip"
    write_submission(csv_path, zip_path, ["testb/abc.jpg", "testb/x y.jpg", "testb/z.jpg"], [42, 0, 4999])
    data = csv_path.read_bytes()
    assert data == b"abc.jpg,0042\nx y.jpg,0000\nz.jpg,4999\n"
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["pred_results.csv"]
        assert archive.read("pred_results.csv") == data
    first_zip = zip_path.read_bytes()
    write_submission(csv_path, zip_path, ["testb/abc.jpg", "testb/x y.jpg", "testb/z.jpg"], [42, 0, 4999])
    assert zip_path.read_bytes() == first_zip  # reproducible bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred_results.csv", "pred_results.zip"]


@pytest.mark.parametrize("bad", ["testb/a,b.jpg", "testb/a\nb.jpg"])
def test_submission_refuses_names_that_break_the_csv(tmp_path, bad):
    with pytest.raises(InputError, match="comma or line break"):
        write_submission(tmp_path / "s.csv", tmp_path / "s.zip", ["testb/ok.jpg", bad], [1, 2])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------- greedy parity with the original script


def _original_greedy(all_scores, K):
    """tools/re-distribute-label.py's algorithm, transcribed statement by statement
    (dicts of class names, stale counts, a view into the stacked scores, argpartition)."""
    from collections import defaultdict

    classes = [f"{i:0>4d}" for i in range(all_scores.shape[1])]
    result_list = [[f"{i}.jpg", classes[int(np.argmax(s))], s] for i, s in enumerate(all_scores)]
    data_dict = defaultdict(list)
    for i, (_, classname, _) in enumerate(result_list):
        data_dict[classname].append(i)
    less_count_classes = defaultdict(list)
    for classname in classes:
        if len(data_dict[classname]) < K:
            less_count_classes[len(data_dict[classname])].append(classname)
    pred_labels = np.array([int(r[1]) for r in result_list])
    all_soreces = np.stack([r[2] for r in result_list], axis=0)
    for count, classname_list in less_count_classes.items():
        for classname in classname_list:
            class_idx = int(classname)
            soreces = all_soreces[:, class_idx]
            soreces[pred_labels == class_idx] = 0
            topk = K - count
            indxs = np.argpartition(soreces, -topk)[-topk:]
            for ind in indxs:
                result_list[int(ind)][1] = classname
    return np.array([int(r[1]) for r in result_list])


def test_greedy_equals_the_original_script_on_random_inputs():
    rng = np.random.default_rng(0)
    for case in range(300):
        n, c = int(rng.integers(2, 60)), int(rng.integers(2, 12))
        # skewed rows (a few classes dominate) so many classes fall below K; float64
        # scores are distinct, so argpartition's choice is unique
        probs = rng.dirichlet(np.full(c, 0.3), n) * rng.uniform(0.5, 1, (n, 1))
        k = int(rng.integers(1, max(2, 2 * n // c + 2)))
        k = min(k, n)
        np.testing.assert_array_equal(
            redistribute_greedy(probs, k), _original_greedy(probs.copy(), k), err_msg=f"case {case}: n={n} c={c} k={k}"
        )


# ----------------------------------------------------------- global balancing


def test_prior_correction_matches_the_target_and_flips_the_biased_rows():
    # 4 rows, 2 classes; the model favours class 0 (every row's argmax is 0), but rows 2
    # and 3 are near the boundary. Prior correction toward 50/50 moves the two closest.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]], dtype=F16)
    logp, cand = top_candidates(probs, 2)
    dual = balance_duals(logp, cand, np.array([2.0, 2.0]))
    q = np.exp(logp + dual[cand])
    q /= q.sum(1, keepdims=True)
    col = np.bincount(cand.ravel(), q.ravel(), minlength=2)
    np.testing.assert_allclose(col, [2, 2], rtol=1e-2)  # expected counts equal the target (tol 1 %)
    np.testing.assert_array_equal(redistribute_balanced(probs, "prior"), [0, 0, 1, 1])
    np.testing.assert_array_equal(redistribute_balanced(probs, "prior", strength=0), [0, 0, 0, 0])


def test_transport_fills_class_capacities_like_the_optimal_assignment():
    # 6 rows, 3 classes, 2 per class. Brute force over all balanced labelings gives the
    # assignment maximising sum log p; transport must find the same one.
    import itertools

    rng = np.random.default_rng(3)
    probs = rng.dirichlet([2.0, 1.0, 0.5], 6).astype(np.float32)
    best, best_score = None, -np.inf
    for perm in set(itertools.permutations([0, 0, 1, 1, 2, 2])):
        score = np.log(probs[np.arange(6), perm]).sum()
        if score > best_score:
            best, best_score = np.array(perm), score
    labels = redistribute_balanced(probs, "transport", temperature=0.01)
    np.testing.assert_array_equal(labels, best)
    np.testing.assert_array_equal(class_counts(labels, 3), [2, 2, 2])


def test_balancing_beats_greedy_when_balanced_and_argmax_when_iid():
    # bench/synth.py at a small scale (N/C = 18, models biased to a long-tailed prior)
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from synth import Synth

    s = Synth(num_models=5, num_rows=3600, num_classes=200, seed=1)
    for prior in ["balanced", "iid"]:
        y = s.labels(prior)
        ens = sum(s.block(m, 0, y).astype(np.float32) for m in range(5)) / 5
        argmax = (ens.argmax(1) == y).mean()
        greedy = max((redistribute_greedy(ens, k) == y).mean() for k in range(12, 19))
        prior_acc = (redistribute_balanced(ens, "prior") == y).mean()
        if prior == "balanced":
            assert prior_acc > greedy + 0.01, (prior_acc, greedy)
            assert (redistribute_balanced(ens, "transport") == y).mean() > greedy + 0.01
        else:
            assert prior_acc >= argmax, (prior_acc, argmax)


# ------------------------------------------------------------ bad prediction files


def _probs(n=5, c=4):
    return np.full((n, c), 1 / c, dtype=F16)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.nan, "row 3 has NaN"),
        (np.inf, "row 3 has inf"),
        (-0.25, r"row 3 has the value -0\.25 outside \[0, 1\]"),
        (1.5, r"row 3 has the value 1\.5 outside"),
        (0.75, r"row 3 sums to 1\.5"),
    ],
)
def test_ensemble_names_the_file_and_row_of_bad_values(tmp_path, value, message):
    good = _save(tmp_path, "good", _probs())
    bad_probs = _probs()
    bad_probs[3, 1] = value
    bad = _save(tmp_path, "bad", bad_probs)
    with pytest.raises(InputError, match=rf"bad\.npy: {message}"):
        ensemble_predictions([good, bad], [1.0, 1.0], tmp_path / "ens", chunk_rows=2)
    assert not list(tmp_path.glob("ens*")) and not list(tmp_path.glob(".ens*"))


def test_ensemble_refuses_truncated_npy_and_row_count_mismatch(tmp_path):
    a = _save(tmp_path, "a", _probs())
    b = _save(tmp_path, "b", _probs())
    data = (tmp_path / "b.npy").read_bytes()
    (tmp_path / "b.npy").write_bytes(data[:-3])
    with pytest.raises(InputError, match=r"b\.npy: truncated"):
        ensemble_predictions([a, b], [1.0, 1.0], tmp_path / "ens")
    (tmp_path / "b.npy").write_bytes(data)
    (tmp_path / "b.rows.txt").write_text("testa/0.jpg\n")
    with pytest.raises(InputError, match=r"b\.npy: 5 rows but .*b\.rows\.txt lists 1"):
        ensemble_predictions([a, b], [1.0, 1.0], tmp_path / "ens")
    with pytest.raises(InputError, match="zero models"):
        ensemble_predictions([], [], tmp_path / "ens")
    assert not list(tmp_path.glob("ens*"))


def test_ensemble_streaming_equals_in_memory_sum_over_many_blocks(tmp_path):
    rng = np.random.default_rng(0)
    mats = [rng.dirichlet(np.ones(7), 50).astype(F16) for _ in range(3)]
    stems = [_save(tmp_path, f"m{i}", m) for i, m in enumerate(mats)]
    ensemble_predictions(stems, [1.0, 2.0, 4.0], tmp_path / "ens", chunk_rows=8)
    expected = (mats[0].astype(np.float32) + 2 * mats[1].astype(np.float32) + 4 * mats[2].astype(np.float32)) / 7
    # equal up to one float16 rounding step (the sum order differs)
    np.testing.assert_allclose(load_predictions(tmp_path / "ens")[0].astype(np.float32), expected, rtol=1e-3, atol=1e-4)


def test_redistribute_command_with_prior_method(tmp_path):
    from webfg.cli import main

    stem = _save(tmp_path, "e", np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]]))
    main(
        [
            "redistribute",
            str(stem),
            "--method",
            "prior",
            "--out",
            str(tmp_path / "l.tsv"),
            "--counts",
            str(tmp_path / "c.tsv"),
        ]
    )
    assert (tmp_path / "l.tsv").read_text().splitlines()[1:] == [
        "testa/0.jpg\t0\t0",
        "testa/1.jpg\t0\t0",
        "testa/2.jpg\t0\t1",
        "testa/3.jpg\t0\t1",
    ]
    assert (tmp_path / "c.tsv").read_text().splitlines()[1:] == ["0\t4\t2", "1\t0\t2"]
    with pytest.raises(SystemExit, match="needs --k"):
        main(["redistribute", str(stem), "--out", str(tmp_path / "x.tsv"), "--counts", str(tmp_path / "y.tsv")])


def test_ensemble_command_takes_a_folder_and_refuses_an_empty_one(tmp_path, capsys):
    from webfg.cli import main

    (tmp_path / "models").mkdir()
    for name, p in [("m-7000", [[0.75, 0.25]]), ("m-8000", [[0.25, 0.75]])]:
        _save(tmp_path / "models", name, p)
    main(["ensemble", str(tmp_path / "models"), "--accuracy-from-name", "--power", "1", "--out", str(tmp_path / "e")])
    # weights 1 and 8/7: (0.75 + 0.25 * 8/7) / (15/7) = 0.4833
    assert load_predictions(tmp_path / "e")[0][0, 0] == pytest.approx((0.75 + 0.25 * 8 / 7) / (15 / 7), abs=1e-3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"empty: folder holds no \*\.npy files"):
        main(["ensemble", str(tmp_path / "empty"), "--out", str(tmp_path / "e2")])
    with pytest.raises(SystemExit, match=r"empty: folder holds no \*\.pkl files"):
        main(["import-legacy", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "x")])


def test_reading_a_memory_map_through_does_not_grow_rss(tmp_path):
    # 40 MB of float16: a plain read-through maps all of it; the chunked readers unmap
    # what they have read (madvise DONTNEED), so RSS stays near where it was
    from numpy.lib.format import open_memmap

    from webfg.postprocess import predicted_labels

    def rss_mb():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024

    m = open_memmap(tmp_path / "p.npy", mode="w+", dtype=F16, shape=(4000, 5000))
    m[:] = 0.5
    m.flush()
    del m
    probs = np.load(tmp_path / "p.npy", mmap_mode="r")
    before = rss_mb()
    predicted_labels(probs, chunk_rows=500)
    assert rss_mb() - before < 10
    np.asarray(probs).sum(dtype=np.float32)
    assert rss_mb() - before > 30  # the check above can fail
