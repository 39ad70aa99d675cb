"""webfg.layout (one source for result paths) and the readers built on it: summary reads only
its declared inputs; pseudo-label file names spell the selection; `webfg pseudo` = the stage."""

import re

import numpy as np
import pytest

from webfg.cli import main
from webfg.io import read_split_list, save_predictions, write_split_list, write_text
from webfg.layout import PSEUDO_TAG, Layout, parse_pseudo_tag, pseudo_tag, pseudo_tag_of
from webfg.postprocess import pseudo_yield
from webfg.pseudo import YIELD_THRESHOLDS, make_pseudo
from webfg.summary import summarize, summary_inputs


@pytest.mark.parametrize(
    "settings, tag",
    [
        ({"scheme": "fixed", "threshold": 0.45}, "0.45"),  # the name runs made before schemes existed
        ({"scheme": "fixed", "threshold": 0}, "0"),
        ({"scheme": "adaptive", "threshold": 0.45, "min_threshold": 0.2}, "adaptive0.45-min0.2"),
        ({"scheme": "balanced", "fraction": 0.8, "min_threshold": 0.25}, "balanced0.8-min0.25"),
        ({"scheme": "fixed", "threshold": 0.123456789}, "0.123456789"),  # no rounding: equal name = equal setting
    ],
)
def test_pseudo_tags_spell_the_selection_and_read_back(settings, tag):
    assert pseudo_tag(**settings) == tag
    assert re.fullmatch(PSEUDO_TAG, tag)
    assert parse_pseudo_tag(tag) == {k: float(v) if k != "scheme" else v for k, v in settings.items()}


def test_pseudo_tag_of_a_config_entry_uses_only_the_schemes_parameters():
    entry = {"from": "r0", "splits": ["testa"], "threshold": 0.45, "min_threshold": 0.2, "fraction": 0.5}
    assert pseudo_tag_of({**entry, "scheme": "balanced"}) == "balanced0.5-min0.2"
    assert pseudo_tag_of({**entry, "scheme": "balanced", "threshold": 0.6}) == "balanced0.5-min0.2"
    assert pseudo_tag_of({**entry, "scheme": "adaptive"}) == "adaptive0.45-min0.2"
    assert pseudo_tag_of({**entry, "scheme": "fixed"}) == "0.45"
    with pytest.raises(ValueError, match="not a pseudo-label selection tag"):
        parse_pseudo_tag("flex0.4")


def test_layout_paths_and_wildcard_patterns():
    L = Layout()
    assert L.model("r0", "swin") == "results/r0/train/swin.pt"
    assert L.history("r0", "swin") == "results/r0/train/swin.history.tsv"
    assert L.state_dir("r0", "swin") == "results/r0/train/swin.state"
    assert L.model("{round}", "{model}") == "results/{round}/train/{model}.pt"
    assert L.pseudo("a1", "testa", "0.45") == "results/a1/pseudo/testa@0.45.txt"
    assert L.prediction("r0", "m", "val") == "results/r0/infer/m/val"
    assert Layout("/x/res").final_ensemble == "/x/res/final/ensemble"


# ---------------------------------------------------------------- summary on a hand-made run

ROUNDS = {
    "r0": {"models": ["m"]},
    "a1": {
        "models": ["m"],
        "pseudo": {
            "from": "r0",
            "splits": ["testa"],
            "scheme": "balanced",
            "threshold": 0.45,
            "min_threshold": 0.2,
            "fraction": 0.5,
        },
    },
}
FINAL = {"split": "testb", "members": [["a1", "m"]]}
TESTA = [f"testa/{i}.jpg" for i in range(6)]
TESTA_TRUTH = [0, 1, 2, 0, 1, 2]
# predicted 0, 1, 0, 0, 2, 2 at 0.9, 0.8, 0.6, 0.7, 0.4, 0.75: rows 2 and 4 are wrong
TESTA_PROBS = np.array(
    [
        [0.9, 0.05, 0.05],
        [0.1, 0.8, 0.1],
        [0.6, 0.1, 0.3],
        [0.7, 0.2, 0.1],
        [0.3, 0.3, 0.4],
        [0.1, 0.15, 0.75],
    ]
)


def fake_run(tmp_path):
    """Every file summary_inputs names, with hand values, and an answer key."""
    L = Layout(str(tmp_path / "results"))
    testb = [f"testb/{i}.jpg" for i in range(3)]
    onehot = np.eye(3)[[0, 1, 2]]
    for rnd in ROUNDS:
        write_split_list(L.meta_train(rnd), [(f"train/{c}/{i}.jpg", c) for c in range(3) for i in range(2)])
        save_predictions(L.prediction(rnd, "m", "val"), onehot, ["val/a", "val/b", "val/c"], {"val_accuracy": 0.5})
        save_predictions(L.prediction(rnd, "m", "testb"), onehot, testb, {"val_accuracy": 0.5})
        save_predictions(L.ensemble(rnd, "testa"), TESTA_PROBS, TESTA, {})
        save_predictions(L.ensemble(rnd, "testb"), onehot, testb, {})
    tag = pseudo_tag_of(ROUNDS["a1"]["pseudo"])
    make_pseudo(
        L.ensemble("r0", "testa"),
        L.pseudo("r0", "testa", tag),
        L.pseudo_yield("r0", "testa", tag),
        "balanced",
        min_threshold=0.2,
        fraction=0.5,
        log=lambda m: None,
    )
    save_predictions(L.final_ensemble, onehot, testb, {})
    write_text(L.final_labels, "relpath\targmax\tlabel\n" + "".join(f"{r}\t{i}\t{i}\n" for i, r in enumerate(testb)))
    write_text(L.removed, "path\treason\n")
    answers = tmp_path / "answers"
    write_split_list(answers / "testa.txt", list(zip(TESTA, TESTA_TRUTH)))
    write_split_list(answers / "testb.txt", [(r, i) for i, r in enumerate(testb)])
    return L, answers


def test_summary_reads_only_its_declared_inputs_and_scores_class_aware_pseudo_labels(tmp_path):
    L, answers = fake_run(tmp_path)
    declared = [f for files in summary_inputs(L, ROUNDS, ["testa", "testb"], FINAL, False).values() for f in files]
    on_disk = {str(p) for p in (tmp_path / "results").rglob("*") if p.is_file() and not p.name.endswith(".yield.tsv")}
    assert set(declared) == on_disk  # nothing else exists: an undeclared read would fail below
    out = tmp_path / "out"
    summarize(L, ROUNDS, ["testa", "testb"], FINAL, answers, False, out / "s.tsv", out / "s.json")
    lines = (out / "s.tsv").read_text().splitlines()
    table = {r.split("\t")[0]: dict(zip(lines[0].split("\t"), r.split("\t"))) for r in lines[1:]}
    # balanced, quota round(0.5 * 6 / 3) = 1 per predicted class: rows 0, 1, 5, all right
    # (the fixed 0.45 would keep rows 0, 1, 2, 3, 5 with precision 4/5)
    assert table["a1"]["pseudo_images"] == "3" and table["a1"]["pseudo_precision"] == "1.0000"
    assert table["r0"]["pseudo_images"] == "0" and table["r0"]["pseudo_precision"] == ""
    assert table["a1"]["train_images"] == "6" and table["submission"]["accuracy_testb"] == "1.0000"


def test_webfg_pseudo_writes_what_the_stage_writes(tmp_path):
    save_predictions(tmp_path / "ens", TESTA_PROBS.astype(np.float16), TESTA, {})
    make_pseudo(tmp_path / "ens", tmp_path / "stage.txt", tmp_path / "stage.yield.tsv", "adaptive", 0.65, 0.3)
    main(
        ["pseudo", str(tmp_path / "ens"), "--scheme", "adaptive", "--threshold", "0.65"]
        + ["--min-threshold", "0.3", "--out", str(tmp_path / "cli.txt")]
    )
    for a, b in [("stage.txt", "cli.txt"), ("stage.yield.tsv", "cli.yield.tsv")]:
        assert (tmp_path / a).read_bytes() == (tmp_path / b).read_bytes()
    # adaptive at 0.65: class 0 has 2 confident rows (bar 0.65), classes 1 and 2 one each
    # (bar 0.65 * 0.5 / 1.5 = 0.22, raised to the floor 0.3): only row 2 (class 0 at 0.6) is left out
    assert read_split_list(tmp_path / "cli.txt") == [
        ("testa/0.jpg", 0),
        ("testa/1.jpg", 1),
        ("testa/3.jpg", 0),
        ("testa/4.jpg", 2),
        ("testa/5.jpg", 2),
    ]
    rows = [line.split("\t") for line in (tmp_path / "cli.yield.tsv").read_text().splitlines()[1:]]
    assert [float(r[0]) for r in rows] == YIELD_THRESHOLDS.tolist()
    assert [int(r[1]) for r in rows] == pseudo_yield(TESTA_PROBS.astype(np.float16), YIELD_THRESHOLDS).tolist()


def test_webfg_pseudo_names_a_bad_setting(tmp_path, capsys):
    save_predictions(tmp_path / "ens", TESTA_PROBS, TESTA, {})
    with pytest.raises(SystemExit) as e:
        main(
            [
                "pseudo",
                str(tmp_path / "ens"),
                "--scheme",
                "balanced",
                "--fraction",
                "0",
                "--out",
                str(tmp_path / "x.txt"),
            ]
        )
    assert e.value.code == 2 and "--fraction: 0.0 is outside (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
