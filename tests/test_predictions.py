"""Damaged prediction files through every command that reads one (issue 13/14): one line on
stderr naming the file, exit 2, no traceback, nothing written; and valid variants (float32,
Fortran order, float64) read with the same values as the float16 original. ~5 s."""

import json
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from webfg.cli import main
from webfg.io import InputError, load_predictions, save_predictions, write_split_list

ROWS = [f"testb/{i}.jpg" for i in range(6)]
PROBS = np.array(
    [
        [0.625, 0.25, 0.125],
        [0.125, 0.75, 0.125],
        [0.25, 0.25, 0.5],
        [0.5, 0.375, 0.125],
        [0.0625, 0.0625, 0.875],
        [0.125, 0.5, 0.375],
    ]
)


def _good(folder: Path, name: str = "good") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_split_list(folder / "train.txt", [(f"train/{i}.jpg", i % 3) for i in range(7)])  # for map
    save_predictions(folder / name, PROBS, ROWS, {"model": name, "split": "testb", "val_accuracy": 0.7})
    return folder / name


def _with_value(value, row=3):
    def damage(stem):
        p = PROBS.copy()
        p[row, 1] = value
        np.save(f"{stem}.npy", p.astype(np.float16))

    return damage


def _array(arr):
    return lambda stem: np.save(f"{stem}.npy", arr, allow_pickle=True)


def _bytes(data):
    return lambda stem: Path(f"{stem}.npy").write_bytes(data)


def _npz(stem):
    with open(f"{stem}.npy", "wb") as f:
        np.savez(f, probs=PROBS.astype(np.float16))


def _pickle(stem):
    Path(f"{stem}.npy").write_bytes(pickle.dumps(PROBS))


def _truncate(stem):
    data = Path(f"{stem}.npy").read_bytes()
    Path(f"{stem}.npy").write_bytes(data[:-5])


def _rows(lines):
    return lambda stem: Path(f"{stem}.rows.txt").write_text("".join(line + "\n" for line in lines))


def _meta(**changes):
    def damage(stem):
        path = Path(f"{stem}.json")
        meta = json.loads(path.read_text())
        meta.update(changes)
        path.write_text(json.dumps(meta))

    return damage


# (case id, damage applied to a good prediction, regex the one-line error must match)
DAMAGED = [
    ("nan", _with_value(np.nan), r"bad\.npy: row 3 has NaN"),
    ("inf", _with_value(np.inf), r"bad\.npy: row 3 has inf"),
    ("negative", _with_value(-0.25), r"bad\.npy: row 3 has the value -0\.25 outside \[0, 1\]"),
    ("above one", _with_value(1.5), r"bad\.npy: row 3 has the value 1\.5 outside \[0, 1\]"),
    ("row sum", _with_value(0.75), r"bad\.npy: row 3 sums to 1\.375, not 1"),
    ("logits", _array((np.log(PROBS) * 3).astype(np.float16)), r"bad\.npy: row 0 has the value .* outside \[0, 1\]"),
    ("logits float32", _array((np.log(PROBS) - 1).astype(np.float32)), r"bad\.npy: row 0 has the value .* outside"),
    ("integers", _array((PROBS * 8).astype(np.int64)), r"bad\.npy: expected float16 probabilities .* got int64"),
    (
        "1-D",
        _array(PROBS[:, 0].astype(np.float16)),
        r"bad\.npy: expected a 2-D \(rows, classes\) matrix, got shape \(6,\)",
    ),
    ("3-D", _array(PROBS[None].astype(np.float16)), r"bad\.npy: expected a 2-D .* got shape \(1, 6, 3\)"),
    ("no rows", _array(np.zeros((0, 3), np.float16)), r"bad\.npy: empty matrix, shape \(0, 3\)"),
    ("no classes", _array(np.zeros((6, 0), np.float16)), r"bad\.npy: empty matrix, shape \(6, 0\)"),
    ("objects", _array(np.array([{"a": 1}] * 6, dtype=object)), r"bad\.npy: .*(objects|pickle)"),
    ("npz", _npz, r"bad\.npy: a \.npz \(zip\) archive under a \.npy name"),
    ("pickle", _pickle, r"bad\.npy: a Python pickle under a \.npy name"),
    ("text", _bytes(b"0.5 0.5\n0.25 0.75\n"), r"bad\.npy: not a numpy \.npy file"),
    ("zero bytes", _bytes(b""), r"bad\.npy: not a numpy \.npy file"),
    ("truncated", _truncate, r"bad\.npy: truncated: \d+ bytes"),
    ("no npy", lambda stem: Path(f"{stem}.npy").unlink(), r"bad\.npy: no such file"),
    ("no rows.txt", lambda stem: Path(f"{stem}.rows.txt").unlink(), r"bad\.rows\.txt: no such file"),
    ("fewer row names", _rows(ROWS[:4]), r"bad\.npy: 6 rows but .*bad\.rows\.txt lists 4"),
    ("more row names", _rows(ROWS + ["testb/x.jpg"]), r"bad\.npy: 6 rows but .*bad\.rows\.txt lists 7"),
    (
        "duplicate row",
        _rows(ROWS[:5] + [ROWS[1]]),
        r"bad\.rows\.txt:6: duplicate row name 'testb/1\.jpg' \(also on line 2\)",
    ),
    ("row escapes root", _rows(ROWS[:5] + ["../x.jpg"]), r"bad\.rows\.txt:6: path '\.\./x\.jpg' must be relative"),
    ("json classes", _meta(num_classes=5), r"bad\.json: num_classes is 5 but .*bad\.npy has 3"),
    ("json rows", _meta(num_rows=7), r"bad\.json: num_rows is 7 but .*bad\.npy has 6"),
    ("json split", _meta(split="testa"), r"bad\.json: split is 'testa' but .*bad\.rows\.txt lists 'testb/0\.jpg'"),
    ("json broken", lambda stem: Path(f"{stem}.json").write_text("{"), r"bad\.json:1: not valid JSON"),
    ("json list", lambda stem: Path(f"{stem}.json").write_text("[]"), r"bad\.json: expected a JSON object"),
]


def _commands(stem: Path, out: Path, other: Path):
    return {
        "pseudo": ["pseudo", str(stem), "--threshold", "0.5", "--out", str(out / "p.txt")],
        "redistribute": [
            "redistribute",
            str(stem),
            "--method",
            "greedy",
            "--k",
            "2",
            "--out",
            str(out / "l.tsv"),
            "--counts",
            str(out / "c.tsv"),
        ],
        "redistribute map": [
            "redistribute",
            str(stem),
            "--method",
            "map",
            "--train-list",
            str(other.parent / "train.txt"),
            "--out",
            str(out / "l.tsv"),
            "--counts",
            str(out / "c.tsv"),
        ],
        "ensemble": ["ensemble", str(other), str(stem), "--out", str(out / "e")],
        "ensemble first": ["ensemble", str(stem), str(other), "--power", "0", "--out", str(out / "e")],
        # a prediction handed to submit instead of the labels TSV
        "submit": ["submit", f"{stem}.npy", "--csv", str(out / "s.csv"), "--zip", str(out / "s.zip")],
    }


def _run_fails(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"webfg {argv[0]}: error: ")
    return err


@pytest.mark.parametrize("case, damage, message", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damaged_prediction_through_every_command(tmp_path, capsys, case, damage, message):
    other = _good(tmp_path / "in", "other")
    stem = _good(tmp_path / "in", "bad")
    damage(stem)
    out = tmp_path / "out"
    out.mkdir()
    for name, argv in _commands(stem, out, other).items():
        err = _run_fails(argv, capsys)
        if name != "submit":
            assert __import__("re").search(message, err), (name, err)
        else:
            assert "bad.npy" in err
        assert not list(out.iterdir()), (name, list(out.iterdir()))


@pytest.mark.parametrize(
    "text, message",
    [
        ("relpath\targmax\tlabel\ntestb/a.jpg\t1\tx\n", r"l\.tsv:2: label 'x' is not a non-negative integer"),
        ("relpath\targmax\tlabel\ntestb/a.jpg\t1\t-1\n", r"l\.tsv:2: label '-1' is not"),
        ("relpath\targmax\tlabel\ntestb/a.jpg\t1\n", r"l\.tsv:2: expected 3 tab-separated fields, got 2"),
        (
            "relpath\targmax\tlabel\ntestb/a.jpg\t1\t1\ntestb/a.jpg\t1\t2\n",
            r"l\.tsv:3: row 'testb/a\.jpg' appears twice",
        ),
        ("relpath\targmax\tlabel\n", r"l\.tsv: no rows after the header"),
        ("", r"l\.tsv:1: expected the header"),
        ("testb/a.jpg 1\n", r"l\.tsv:1: expected the header"),
    ],
)
def test_damaged_labels_through_submit(tmp_path, capsys, text, message):
    (tmp_path / "l.tsv").write_text(text)
    err = _run_fails(
        ["submit", str(tmp_path / "l.tsv"), "--csv", str(tmp_path / "o/s.csv"), "--zip", str(tmp_path / "o/s.zip")],
        capsys,
    )
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


def test_ensemble_of_members_with_different_rows_says_which(tmp_path, capsys):
    a = _good(tmp_path, "a")
    save_predictions(tmp_path / "b", PROBS[:5], ROWS[:5], {"val_accuracy": 0.7})
    save_predictions(tmp_path / "c", PROBS[::-1], ROWS[::-1], {"val_accuracy": 0.7})
    save_predictions(tmp_path / "d", PROBS, ROWS[:5] + ["testb/z.jpg"], {"val_accuracy": 0.7})
    for other, message in [
        ("b", r"b\.npy has 5 rows but .*a\.npy has 6"),
        ("c", r"row order of .*c\.rows\.txt differs from .*a\.rows\.txt"),
        ("d", r"d\.rows\.txt:6: row 'testb/z\.jpg' is not in .*a\.rows\.txt"),
    ]:
        err = _run_fails(["ensemble", str(a), str(tmp_path / other), "--out", str(tmp_path / "o" / "e")], capsys)
        assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ valid variants


VALID = {
    "float32": lambda stem: np.save(f"{stem}.npy", PROBS.astype(np.float16).astype(np.float32)),
    "float64": lambda stem: np.save(f"{stem}.npy", PROBS.astype(np.float16).astype(np.float64)),
    "fortran": lambda stem: np.save(f"{stem}.npy", np.asfortranarray(PROBS.astype(np.float16))),
    "big-endian float32": lambda stem: np.save(f"{stem}.npy", PROBS.astype(np.float16).astype(">f4")),
    "no json": lambda stem: Path(f"{stem}.json").unlink(),
}


def _outputs(stem, out, other, capsys):
    out.mkdir()
    for name, argv in _commands(stem, out, other).items():
        if name in ("submit", "ensemble"):  # the reference has no val accuracy without its json
            continue
        main(argv)
        capsys.readouterr()
        yield name, {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix != ".json"}
        for p in out.iterdir():
            p.unlink()


@pytest.mark.parametrize("variant", VALID)
def test_valid_variants_give_the_same_outputs_as_float16(tmp_path, capsys, variant):
    other = _good(tmp_path / "in", "other")
    ref = _good(tmp_path / "in", "ref")
    stem = _good(tmp_path / "in", "v")
    VALID[variant](stem)
    probs, rows, _ = load_predictions(stem)
    np.testing.assert_array_equal(np.asarray(probs, dtype=np.float32), PROBS.astype(np.float16).astype(np.float32))
    assert rows == ROWS
    expected = dict(_outputs(ref, tmp_path / "ref_out", other, capsys))
    got = dict(_outputs(stem, tmp_path / "v_out", other, capsys))
    assert got == expected and expected["pseudo"]["p.txt"]
    # pseudo at 0.5 keeps rows whose max > 0.5: rows 0, 1, 4
    assert expected["pseudo"]["p.txt"] == b"testb/0.jpg 0\ntestb/1.jpg 1\ntestb/4.jpg 2\n"


def test_ensemble_reads_float32_and_fortran_members_like_float16(tmp_path):
    rng = np.random.default_rng(0)
    mats = [rng.dirichlet(np.ones(7), 100).astype(np.float16) for _ in range(3)]
    rows = [f"testb/{i}.jpg" for i in range(100)]
    stems = []
    for i, (m, conv) in enumerate(zip(mats, [lambda a: a, lambda a: a.astype(np.float32), np.asfortranarray])):
        save_predictions(tmp_path / f"m{i}", m, rows, {"val_accuracy": 0.5 + 0.1 * i})
        np.save(tmp_path / f"m{i}.npy", conv(m))
    from webfg.postprocess import ensemble_predictions

    ensemble_predictions(
        stems := [tmp_path / f"m{i}" for i in range(3)],
        [1.0, 2.0, 5.0],
        tmp_path / "e",
        chunk_rows=16,
        dtype=np.float32,
        threads=2,
    )
    expected = sum(w * m.astype(np.float64) for w, m in zip([1, 2, 5], mats)) / 8
    got, _, meta = load_predictions(tmp_path / "e")
    assert got.dtype == np.float32 and meta["members"] == [str(s) for s in stems]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_half_bit_trick_is_exact_for_every_float16_in_unit_interval():
    from webfg.stream import HALF_TO_FLOAT_SCALE, half_bits_to_float

    bits = np.arange(0, 0x3C01, dtype=np.uint16)  # 0, every subnormal, every normal up to 1.0
    out = np.empty(bits.shape, np.float32)
    got = half_bits_to_float(bits, out) * HALF_TO_FLOAT_SCALE
    np.testing.assert_array_equal(got, bits.view(np.float16).astype(np.float32))


def test_load_predictions_refuses_without_reading_values_when_asked(tmp_path):
    stem = _good(tmp_path)
    _with_value(np.nan)(stem)
    load_predictions(stem, check=False)  # the ensemble checks values in its own pass
    with pytest.raises(InputError, match="row 3 has NaN"):
        load_predictions(stem)


def test_post_processing_commands_do_not_import_torch(tmp_path):
    a, b = _good(tmp_path, "a"), _good(tmp_path, "b")
    script = (
        "import sys\nfrom webfg.cli import main\n"
        f"main(['ensemble', {str(a)!r}, {str(b)!r}, '--out', {str(tmp_path / 'e')!r}])\n"
        f"main(['pseudo', {str(tmp_path / 'e')!r}, '--out', {str(tmp_path / 'p.txt')!r}])\n"
        f"main(['redistribute', {str(tmp_path / 'e')!r}, '--method', 'map', '--train-list', {str(tmp_path / 'train.txt')!r},"
        f" '--out', {str(tmp_path / 'l.tsv')!r},"
        f" '--counts', {str(tmp_path / 'c.tsv')!r}])\n"
        f"main(['submit', {str(tmp_path / 'l.tsv')!r}, '--csv', {str(tmp_path / 's.csv')!r},"
        f" '--zip', {str(tmp_path / 's.zip')!r}])\n"
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert zipfile.ZipFile(tmp_path / "s.zip").read("s.csv")


# ------------------------------------------------------------- map redistribution


def _biased_world(prior: str, seed: int = 0, n: int = 2000, c: int = 50, tau: float = 0.6):
    """Posteriors of one noisy model leaning to a long-tailed training prior by ``tau``."""
    rng = np.random.default_rng(seed)
    train = rng.permutation(1.0 / np.arange(1, c + 1))
    train /= train.sum()
    if prior == "balanced":
        y = rng.permutation(np.arange(n) % c)
    elif prior == "iid":
        y = rng.integers(0, c, n)
    else:
        w = np.exp(0.15 * rng.normal(size=c))
        y = rng.choice(c, n, p=w / w.sum())
    z = rng.normal(0, 1.0, (n, c)) + 2.2 * np.eye(c)[y] + tau * np.log(train * c)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    counts = rng.multinomial(100 * c, train)
    return p.astype(np.float32), y, counts, np.log(train)


@pytest.mark.parametrize("prior", ["balanced", "iid", "lognormal"])
def test_map_recovers_the_training_bias_and_beats_argmax_on_every_test_prior(prior):
    from webfg.postprocess import log_train_prior, redistribute_map, top_candidates, training_bias_exponent

    p, y, counts, _ = _biased_world(prior)
    logp, cand = top_candidates(p, 16)
    tau = training_bias_exponent(logp, cand, log_train_prior(counts))
    assert 0.45 < tau < 0.9  # the world's lean is 0.6 (soft counts of a noisy model over-estimate it a little)
    argmax = (p.argmax(axis=1) == y).mean()
    labels = redistribute_map(p, counts, concentration=4.0)
    assert (labels == y).mean() > argmax + 0.01, ((labels == y).mean(), argmax)


def test_map_leaves_an_unbiased_model_alone():
    from webfg.postprocess import redistribute_map

    p, y, counts, _ = _biased_world("iid", tau=0.0)
    labels = redistribute_map(p, counts, concentration=float("inf"))
    assert (labels != p.argmax(axis=1)).mean() < 0.02
    flat = redistribute_map(p, np.full(p.shape[1], 7), concentration=float("inf"))  # balanced training set
    np.testing.assert_array_equal(flat, p.argmax(axis=1))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "greedy", "--k", "0"], r"--k: 0 is out of range for method greedy; expected an integer >= 1"),
        (["--method", "greedy", "--k", "99"], r"--k: 99 is more than the 6 rows"),
        (
            ["--method", "prior", "--strength", "1.5"],
            r"--strength: 1\.5 is out of range for method prior; expected a number in \[0, 1\]",
        ),
        (["--method", "transport", "--temperature", "0"], r"--temperature: 0\.0 is out of range for method transport"),
        (["--method", "map", "--concentration", "-1"], r"--concentration: -1\.0 is out of range for method map"),
        (["--method", "map", "--candidates", "0"], r"--candidates: 0 is out of range for method map"),
        (["--method", "map"], r"--method map needs --train-list"),
    ],
)
def test_redistribute_parameters_out_of_range_name_the_key(tmp_path, capsys, argv, message):
    stem = _good(tmp_path / "in")
    err = _run_fails(
        [
            "redistribute",
            str(stem),
            *argv,
            "--train-list",
            str(tmp_path / "in" / "train.txt"),
            "--out",
            str(tmp_path / "o" / "l.tsv"),
            "--counts",
            str(tmp_path / "o" / "c.tsv"),
        ]
        if "map" not in argv or "--concentration" in argv or "--candidates" in argv
        else [
            "redistribute",
            str(stem),
            *argv,
            "--out",
            str(tmp_path / "o" / "l.tsv"),
            "--counts",
            str(tmp_path / "o" / "c.tsv"),
        ],
        capsys,
    )
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


def test_redistribute_map_command_writes_labels(tmp_path):
    p, y, counts, _ = _biased_world("balanced", n=500, c=25)
    rows = [f"testb/{i}.jpg" for i in range(len(y))]
    save_predictions(tmp_path / "e", p, rows, {})
    write_split_list(
        tmp_path / "train.txt", [(f"train/{i}.jpg", int(c)) for i, c in enumerate(np.repeat(np.arange(25), counts))]
    )
    main(
        [
            "redistribute",
            str(tmp_path / "e"),
            "--method",
            "map",
            "--train-list",
            str(tmp_path / "train.txt"),
            "--out",
            str(tmp_path / "l.tsv"),
            "--counts",
            str(tmp_path / "c.tsv"),
        ]
    )
    from webfg.postprocess import read_labels, redistribute_map

    got_rows, labels = read_labels(tmp_path / "l.tsv")
    assert got_rows == rows
    np.testing.assert_array_equal(labels, redistribute_map(load_predictions(tmp_path / "e")[0], counts))
    assert (labels == y).mean() > (p.argmax(axis=1) == y).mean()


# ---------------------------------------------------------------------- power auto


def _members_with_val(tmp_path, skills, seed=0, n=600, c=12):
    """Members whose val and test predictions come from the same noisy model of given skill."""
    rng = np.random.default_rng(seed)
    val_rows = [f"train/v{i}.jpg" for i in range(n)]
    y_val, y_test = rng.integers(0, c, n), rng.integers(0, c, n)
    write_split_list(tmp_path / "val.txt", list(zip(val_rows, y_val.tolist())))
    stems = []
    for m, skill in enumerate(skills):
        folder = tmp_path / f"m{m}"
        folder.mkdir()
        accs = []
        for split, y, rows in [("val", y_val, val_rows), ("testb", y_test, [f"testb/{i}.jpg" for i in range(n)])]:
            z = rng.normal(0, 1, (n, c)) + skill * np.eye(c)[y]
            p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            accs.append(float((p.argmax(axis=1) == y).mean()))
            save_predictions(folder / split, p, rows, {"split": split, "val_accuracy": accs[0]})
        stems.append(folder / "testb")
    return stems, y_test


def test_power_auto_picks_on_val_and_records_the_grid(tmp_path, capsys):
    from webfg.postprocess import POWER_GRID, choose_power, member_accuracies

    stems, y_test = _members_with_val(tmp_path, [3.0, 0.6, 0.6])  # one good member, two poor ones
    accs = member_accuracies(stems)
    chosen, table = choose_power([s.parent / "val" for s in stems], tmp_path / "val.txt", accs)
    assert [p for p, _ in table] == list(POWER_GRID)
    assert dict(table)[chosen] == max(a for _, a in table) and chosen > 0 and dict(table)[0.0] < dict(table)[chosen]
    main(
        [
            "ensemble",
            *map(str, stems),
            "--power",
            "auto",
            "--val-list",
            str(tmp_path / "val.txt"),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert f"power auto: {chosen:g}" in capsys.readouterr().out
    probs, _, meta = load_predictions(tmp_path / "e")
    assert meta["power"] == chosen and probs.dtype == np.float32
    lines = (tmp_path / "e.power.tsv").read_text().splitlines()
    assert lines[0] == "power\tval_accuracy\tchosen" and len(lines) == len(POWER_GRID) + 1
    assert [line.split("\t")[0] for line in lines[1:] if line.endswith("\t1")] == [f"{chosen:g}"]


def test_power_auto_errors_name_the_key(tmp_path, capsys):
    stems, _ = _members_with_val(tmp_path, [2.0, 1.0])
    out = tmp_path / "o" / "e"
    err = _run_fails(["ensemble", *map(str, stems), "--power", "auto", "--out", str(out)], capsys)
    assert "--power auto needs --val-list" in err
    err = _run_fails(
        [
            "ensemble",
            *map(str, stems),
            "--power",
            "auto",
            "--accuracy-from-name",
            "--val-list",
            str(tmp_path / "val.txt"),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert "--power auto: needs the members' val probabilities" in err
    err = _run_fails(["ensemble", *map(str, stems), "--power", "-2", "--out", str(out)], capsys)
    assert "--power: expected a number >= 0 or 'auto', got '-2'" in err
    json_path = stems[1].parent / "val.json"
    meta = json.loads(json_path.read_text())
    del meta["val_accuracy"]
    json_path.write_text(json.dumps(meta))
    (stems[1].parent / "testb.json").write_text(json.dumps(meta))
    err = _run_fails(
        ["ensemble", *map(str, stems), "--power", "auto", "--val-list", str(tmp_path / "val.txt"), "--out", str(out)],
        capsys,
    )
    assert "--power: auto needs every member's val accuracy" in err and "testb.json has none" in err
    assert not (tmp_path / "o").exists()


def test_final_ensemble_is_float32_so_rounding_makes_no_ties(tmp_path):
    # two members whose weighted mean differs in the 5th digit: float16 would round it to a tie
    rows = ["testb/a.jpg"]
    save_predictions(tmp_path / "a", np.array([[0.50000, 0.50000]]), rows, {"val_accuracy": 0.5})
    np.save(tmp_path / "a.npy", np.array([[0.5, 0.5]], dtype=np.float32))
    np.save(tmp_path / "b.npy", np.array([[0.5001, 0.4999]], dtype=np.float32))
    (tmp_path / "b.rows.txt").write_text("testb/a.jpg\n")
    from webfg.postprocess import ensemble_predictions

    ensemble_predictions([tmp_path / "a", tmp_path / "b"], [1.0, 1.0], tmp_path / "e32", dtype=np.float32)
    ensemble_predictions([tmp_path / "a", tmp_path / "b"], [1.0, 1.0], tmp_path / "e16", dtype=np.float16)
    e32, e16 = load_predictions(tmp_path / "e32")[0], load_predictions(tmp_path / "e16")[0]
    assert e32[0, 0] > e32[0, 1] and e16[0, 0] == e16[0, 1]


ROW_FILES = {
    "clean": b"testb/a.jpg\ntestb/b c.jpg\n",
    "no-final-newline": b"testb/a.jpg\ntestb/b.jpg",
    "crlf": b"testb/a.jpg\r\ntestb/b.jpg\r\n",
    "bom": b"\xef\xbb\xbftestb/a.jpg\n",
    "blank-line": b"testb/a.jpg\n\ntestb/b.jpg\n",
    "nul": b"testb/a\x00.jpg\ntestb/b.jpg\n",
    "next-line-char": "testb/a\x85b.jpg\n".encode(),
    "line-separator": "testb/a\u2028b.jpg\n".encode(),
    "form-feed": b"testb/a\x0cb.jpg\n",
    "tab": b"testb/a\tb.jpg\n",
    "absolute": b"/etc/passwd\n",
    "climbing": b"testb/../../x.jpg\n",
    "backslash": b"testb\\a.jpg\n",
    "dots-in-name": b"testb/a..b.jpg\ntestb/..a.jpg\n",
    "latin1": b"testb/caf\xe9.jpg\n",
}


@pytest.mark.parametrize("name", ROW_FILES)
def test_fast_row_name_reader_agrees_with_the_list_reader(tmp_path, name):
    """read_row_names (the fast path for 90,000 names x 17 members) returns what
    read_split_list returns, or raises its error, on clean and damaged files alike."""
    from webfg.io import read_split_list
    from webfg.stream import read_row_names

    path = tmp_path / "x.rows.txt"
    path.write_bytes(ROW_FILES[name])
    try:
        want = read_split_list(path, labelled=False)
    except InputError as e:
        with pytest.raises(InputError, match=re.escape(str(e))):
            read_row_names(path)
    else:
        assert read_row_names(path) == want
