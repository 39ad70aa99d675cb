"""The real Snakemake DAG: dry runs of the full plan and an end-to-end run on tiny data.

Each test runs Snakemake in its own working directory (-d), so the repository's
results/ is never touched.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from runner import REPO, run_snakemake
from snakemake.utils import validate

from webfg.cli import main as webfg_main
from webfg.evaluate import load_answers, pseudo_precision
from webfg.io import load_predictions, read_split_list
from webfg.layout import Layout, prediction_files, pseudo_sources
from webfg.postprocess import confidence_and_label, ensemble_weights
from webfg.pseudo import select
from webfg.summary import summary_inputs

pytestmark = pytest.mark.dag


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def full_plan_inputs(workdir: Path) -> None:
    """The files config/config.yaml names before its first job: the data root and pretrained weights."""
    for rel in ["data/accv/train/0000/a.jpg", "data/accv/testa/x.jpg", "data/accv/testb/y.jpg"]:
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_bytes(b"")
    for name in [
        "mae_vit_large_train_testa_1600e",
        "swinv2_large_patch4_window12_192_22k",
        "swinv2_base_patch4_window12_192_22k",
    ]:
        (workdir / "pretrained").mkdir(exist_ok=True)
        (workdir / "pretrained" / f"{name}.pth").write_bytes(b"")


def test_dry_run_of_the_real_17_model_plan(tmp_path):
    full_plan_inputs(tmp_path)
    t0 = time.perf_counter()
    out = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/config.yaml")).stdout
    print(f"dry run of the 17-model plan: {time.perf_counter() - t0:.1f}s")
    counts = job_counts(out)
    # r0: 4 models, a1-a3: 2 each, b1-b3: 4 each, b3_t40/b3_t50: 2 each
    assert counts["train_model"] == 4 + 3 * 2 + 3 * 4 + 2 * 2
    assert counts["infer_probs"] == counts["train_model"]
    assert counts["score_train"] == 4 and counts["filter_noisy"] == 1
    assert counts["final_ensemble"] == 1 and counts["zip_submission"] == 1
    # every model of every round sees the same cleaned val split and its own pseudo-labels
    # pseudo lists: a1..a3 from testa, b1..b3 and b3_t40/b3_t50 from testa + testb
    assert counts["make_pseudo"] == 3 + 2 * 5
    for rule in ["clean_split", "merge_meta", "ensemble_probs", "redistribute"]:
        assert counts[rule] >= 1


def test_config_overrides_apply_on_top_of_the_default_plan(tmp_path):
    """--config without --configfile keeps config/config.yaml (of the working directory) and overrides one key."""
    full_plan_inputs(tmp_path)
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config/config.yaml", tmp_path / "config/config.yaml")
    out = run_snakemake(tmp_path, "-n", "--config", 'final={"split": "testa"}').stdout
    assert job_counts(out)["train_model"] == 4 + 3 * 2 + 3 * 4 + 2 * 2  # the whole plan, not a schema error
    final_job = out.split("rule final_ensemble:")[1].split("\n\n")[0]
    assert "/testa.npy" in final_job and "/testb.npy" not in final_job


def test_config_errors_name_the_key(tmp_path):
    bad = (REPO / "config/tiny.yaml").read_text().replace("from: r0", "from: b1")
    (tmp_path / "bad.yaml").write_text(bad)
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert proc.returncode != 0
    assert "rounds.a1.pseudo.from: 'b1' must be an earlier round" in proc.stdout + proc.stderr
    bad = (REPO / "config/tiny.yaml").read_text().replace("head: arcface", "head: cosface")
    (tmp_path / "bad.yaml").write_text(bad)
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert "models.swin_arc.head: 'cosface' is not one of" in proc.stdout + proc.stderr


def test_pseudo_selection_errors_name_the_key(tmp_path):
    tiny = (REPO / "config/tiny.yaml").read_text()
    for setting, message in [
        ("scheme: adaptive, threshold: 0.3, min_threshold: 0.5", "rounds.a1.pseudo.min_threshold: 0.5 must lie in"),
        ("scheme: balanced, fraction: 1.5", "rounds.a1.pseudo.fraction: 1.5 is outside (0, 1]"),
        ("scheme: flexmatch", "rounds.a1.pseudo.scheme: 'flexmatch' is not one of"),
    ]:
        (tmp_path / "bad.yaml").write_text(
            tiny.replace("splits: [testa], threshold: 0.3", f"splits: [testa], {setting}")
        )
        proc = run_snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, setting


# a1 of config/tiny.yaml selected class-balanced: at most 0.5 * N/C per predicted class, above 0.2
BALANCED = ("splits: [testa], threshold: 0.3", "splits: [testa], scheme: balanced, fraction: 0.5, min_threshold: 0.2")
BALANCED_TAG = "balanced0.5-min0.2"


def workflow_config(path) -> dict:
    """A config file as the workflow sees it: schema defaults filled."""
    config = yaml.safe_load(Path(path).read_text())
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def balanced_config(tmp_path) -> tuple[Path, dict]:
    """config/tiny.yaml with a balanced a1 (written to tmp_path), and its workflow config."""
    path = tmp_path / "balanced.yaml"
    path.write_text((REPO / "config/tiny.yaml").read_text().replace(*BALANCED))
    return path, workflow_config(path)


def dry_run_jobs(output: str) -> dict[str, list[dict[str, list[str]]]]:
    """rule -> the input, output and log lists of each of its jobs in a dry run's listing."""
    jobs: dict[str, list] = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n?)*)", output, re.M):
        fields = {"input": [], "output": [], "log": []}
        for line in m.group(2).splitlines():
            key, _, value = line.strip().partition(": ")
            if key in fields:
                fields[key] = value.split(", ")
        jobs.setdefault(m.group(1), []).append(fields)
    return jobs


def test_dry_run_paths_are_the_layouts(tmp_path):
    """The paths the rules (common.smk) produce equal webfg.layout's, which the package reads back."""
    path, config = balanced_config(tmp_path)
    jobs = dry_run_jobs(run_snakemake(tmp_path, "-n", "--configfile", str(path)).stdout)
    L, rounds, splits = Layout(), config["rounds"], config["data"]["test_splits"]

    def outputs(rule):
        return {f for job in jobs[rule] for f in job["output"]}

    sources = [src for r in rounds for src in pseudo_sources(rounds[r])]
    assert sources[0] == ("r0", "testa", BALANCED_TAG)
    assert outputs("make_pseudo") == {f for src in sources for f in (L.pseudo(*src), L.pseudo_yield(*src))}
    models = [(r, m) for r in rounds for m in rounds[r]["models"]]
    assert outputs("train_model") == {f for r, m in models for f in (L.model(r, m), L.history(r, m))}
    # where webfg status looks for a running job's progress
    assert {f for job in jobs["train_model"] for f in job["log"]} == {L.job_log(r, "train", m) for r, m in models}
    assert outputs("infer_probs") == {
        f for r, m in models for s in ["val", *splits] for f in prediction_files(L.prediction(r, m, s))
    }
    assert outputs("merge_meta") == {L.meta_train(r) for r in rounds}
    a1_meta = next(job for job in jobs["merge_meta"] if job["output"] == [L.meta_train("a1")])
    assert a1_meta["input"] == [L.train_filtered, L.pseudo("r0", "testa", BALANCED_TAG)]
    declared = summary_inputs(L, rounds, splits, config["final"], config["clean"]["noise_filter"]["enabled"])
    assert sorted(jobs["summarize"][0]["input"]) == sorted(f for files in declared.values() for f in files)
    assert L.plot_pseudo("r0", "testa", BALANCED_TAG) in jobs["all"][0]["input"]


def test_round_target_builds_only_that_round(tmp_path):
    out = run_snakemake(tmp_path, "-n", "round_r0", "--configfile", str(REPO / "config/tiny.yaml")).stdout
    counts = job_counts(out)
    assert counts["train_model"] == 2 and "final_ensemble" not in counts and "filter_noisy" not in counts


# tiny_run: config/tiny.yaml run locally once per session (conftest.py)


def test_tiny_submission_matches_the_test_split(tiny_run):
    answers = load_answers(tiny_run / "data/tiny/answers/testb.txt")
    rows = list(csv.reader((tiny_run / "results/submit.csv").open(encoding="utf-8")))
    names = [r[0] for r in rows]
    assert sorted(names) == sorted(p.split("/", 1)[1] for p in answers)
    assert all(re.fullmatch(r"\d{4}", r[1]) and 0 <= int(r[1]) < 6 for r in rows)
    truth = {p.split("/", 1)[1]: y for p, y in answers.items()}
    accuracy = np.mean([int(label) == truth[name] for name, label in rows])
    assert accuracy > 0.3  # chance is 1/6
    import zipfile

    with zipfile.ZipFile(tiny_run / "results/submit.zip") as z:
        assert z.read("submit.csv") == (tiny_run / "results/submit.csv").read_bytes()


def test_tiny_final_weights_follow_measured_val_accuracy(tiny_run):
    meta = json.loads((tiny_run / "results/final/ensemble.json").read_text())
    accs = [load_predictions(tiny_run / m)[2]["val_accuracy"] for m in meta["members"]]
    np.testing.assert_allclose(meta["weights"], ensemble_weights(accs, 25))


def test_tiny_pseudo_labels_are_the_confident_ensemble_argmax(tiny_run):
    probs, rows, _ = load_predictions(tiny_run / "results/r0/ensemble/testa")
    pseudo = dict(read_split_list(tiny_run / "results/r0/pseudo/testa@0.3.txt"))
    p = probs.astype(np.float64)
    expected = {r: int(p[i].argmax()) for i, r in enumerate(rows) if p[i].max() > 0.3}
    assert pseudo == expected and pseudo
    merged = read_split_list(tiny_run / "results/a1/meta/train.txt")
    base = read_split_list(tiny_run / "results/clean/train_filtered.txt")
    assert merged == base + sorted(pseudo.items(), key=lambda kv: rows.index(kv[0]))
    assert_cli_writes_the_rules_bytes(
        tiny_run, "results/r0/ensemble/testa", "results/r0/pseudo/testa@0.3", ["--threshold", "0.3"]
    )


def assert_cli_writes_the_rules_bytes(workdir, stem, rule_out, options):
    """`webfg pseudo` on the rule's input writes the rule's two files byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        webfg_main(["pseudo", str(workdir / stem), *options, "--out", f"{tmp}/p.txt"])
        assert Path(f"{tmp}/p.txt").read_bytes() == (workdir / f"{rule_out}.txt").read_bytes()
        assert Path(f"{tmp}/p.yield.tsv").read_bytes() == (workdir / f"{rule_out}.yield.tsv").read_bytes()


def test_tiny_balanced_round_selects_what_select_does(tiny_run, tmp_path):
    """A round with class-balanced selection: its pseudo-labels are select()'s on the same
    probabilities (r0's results reused: only the new pseudo-labels and a1's list are made)."""
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    path, config = balanced_config(tmp_path)
    L = Layout()
    listing = L.pseudo("r0", "testa", BALANCED_TAG)
    figure = L.plot_pseudo("r0", "testa", BALANCED_TAG)
    proc = run_snakemake(work, listing, L.meta_train("a1"), figure, "--configfile", str(path))
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["make_pseudo"] == 1 and "train_model" not in counts, counts
    probs, rows, _ = load_predictions(work / L.ensemble("r0", "testa"))
    confidence, predicted = confidence_and_label(probs)
    chosen = select(confidence, predicted, probs.shape[1], "balanced", min_threshold=0.2, fraction=0.5)
    expected = [(rows[i], int(predicted[i])) for i in np.flatnonzero(chosen.keep)]
    assert read_split_list(work / listing) == expected and expected
    # its yield figure draws what the scheme kept (a fixed sweep alone would not show it)
    drawn = (work / f"logs/r0/plots/pseudo_testa@{BALANCED_TAG}.log").read_text()
    assert f"'selected': ['balanced', {len(expected)}, {len(rows)}]" in drawn, drawn
    quota = round(0.5 * len(rows) / probs.shape[1])
    counts = chosen.per_class_counts(predicted)
    fixed = np.bincount(predicted[confidence > 0.3], minlength=probs.shape[1])
    assert counts.max() <= quota and (counts != fixed).any(), (counts, fixed)  # a real difference from fixed
    merged = read_split_list(work / L.meta_train("a1"))
    assert merged == read_split_list(work / L.train_filtered) + expected
    options = ["--scheme", "balanced", "--fraction", "0.5", "--min-threshold", "0.2"]
    assert_cli_writes_the_rules_bytes(work, L.ensemble("r0", "testa"), listing[: -len(".txt")], options)


def test_tiny_summary_scores_every_round(tiny_run):
    lines = (tiny_run / "results/summary.tsv").read_text().splitlines()
    table = [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    assert [r["stage"] for r in table] == [
        "r0",
        "a1",
        "b1",
        "final_ensemble",
        "submission",
        "clean_split",
        "noise_filter",
    ]
    assert all(0 <= float(r["accuracy_testb"]) <= 1 for r in table[:5])
    assert table[5]["removal_recall"] == "1.0000"
    # the pseudo-label columns, recomputed from the lists the rounds trained on and the answer key
    rounds = workflow_config(REPO / "config/tiny.yaml")["rounds"]
    answers = {}
    for split in ("testa", "testb"):
        answers.update(load_answers(tiny_run / f"data/tiny/answers/{split}.txt"))
    for row in table[:3]:
        sources = pseudo_sources(rounds[row["stage"]])
        labelled = [x for src in sources for x in read_split_list(tiny_run / Layout().pseudo(*src))]
        assert int(row["pseudo_images"]) == len(labelled)
        assert row["pseudo_precision"] == (f"{pseudo_precision(labelled, answers):.4f}" if labelled else "")
    assert int(table[1]["pseudo_images"]) > 0
    summary = json.loads((tiny_run / "results/summary.json").read_text())
    assert summary["clean_split"]["recall"] == 1.0  # every injected file fault is caught


def test_tiny_rerun_is_a_no_op_and_one_model_change_reruns_only_it(tiny_run, tmp_path):
    out = run_snakemake(tiny_run, "-n", "--configfile", str(REPO / "config/tiny.yaml")).stdout
    assert "Nothing to be done" in out
    changed = (REPO / "config/tiny.yaml").read_text().replace("depth: 2}", "depth: 3}")
    (tmp_path / "changed.yaml").write_text(changed)
    out = run_snakemake(tiny_run, "-n", "--configfile", str(tmp_path / "changed.yaml")).stdout
    # r0's vit_linear reruns (its params changed); r0's swin_arc does not. Later rounds
    # rerun through their inputs (r0's pseudo-labels and noise filter depend on both).
    assert "output: results/r0/train/vit_linear.pt" in out
    assert "output: results/r0/train/swin_arc.pt" not in out


def test_tiny_out_of_fold_noise_filter_scores_every_train_and_val_image_unseen(tiny_run, tmp_path):
    """The out-of-fold path end to end on the tiny data: folds, a scorer per fold, the held-out
    predictions assembled, train and val filtered by the rule on them."""
    shutil.copytree(tiny_run / "data/tiny", tmp_path / "data/tiny")
    overlay = REPO / "tests/fixtures/tiny-oof.yaml"
    configs = ["--configfile", str(REPO / "config/tiny.yaml"), str(overlay)]
    t0 = time.perf_counter()
    out = run_snakemake(tmp_path, "results/clean/train_filtered.txt", *configs).stdout
    print(f"tiny out-of-fold filter: {time.perf_counter() - t0:.0f}s")
    res = tmp_path / "results/clean"
    train, val = read_split_list(res / "train.txt"), read_split_list(res / "val.txt")
    probs, rows, meta = load_predictions(res / "noise/out_of_fold")
    assert sorted(rows) == sorted(p for p, _ in train + val) and len(meta["folds"]) == 2
    for f in range(2):  # no scorer predicted an image it trained on
        trained = {p for p, _ in read_split_list(res / f"noise/fold{f}.train.txt")}
        _, held, _ = load_predictions(res / f"noise/scorer/fold{f}.heldout")
        assert held and not trained & set(held)
    # the rule on the out-of-fold scores decides what goes, from train and from val
    row_of = {p: i for i, p in enumerate(rows)}
    p = probs.astype(np.float32)
    for listing, kept_list in [(train, "train_filtered.txt"), (val, "val_filtered.txt")]:
        expected = [(x, y) for x, y in listing if p[row_of[x], y] >= 0.05]
        assert read_split_list(res / kept_list) == expected
    removed = (res / "noise_removed.tsv").read_text().splitlines()
    assert removed[0].startswith("path\treason\tsplit\t") and len(removed) - 1 == len(train) + len(val) - sum(
        len(read_split_list(res / n)) for n in ("train_filtered.txt", "val_filtered.txt")
    )
    assert "score_train" not in out and "train_model" not in out  # no round trained for it
    # every round, r0 included, trains on the filtered lists
    plan = run_snakemake(tmp_path, "-n", "results/r0/train/swin_arc.pt", *configs).stdout
    assert "results/clean/train_filtered.txt" in plan.split("rule merge_meta:")[1].split("\n\n")[0]
    assert "results/clean/val_filtered.txt" in plan.split("rule train_model:")[1].split("\n\n")[0]


def test_out_of_fold_scorer_must_be_a_model(tmp_path):
    bad = (REPO / "tests/fixtures/tiny-oof.yaml").read_text().replace("scorer: scorer", "scorer: nope")
    (tmp_path / "bad.yaml").write_text(bad)
    proc = run_snakemake(
        tmp_path, "-n", "--configfile", str(REPO / "config/tiny.yaml"), str(tmp_path / "bad.yaml"), check=False
    )
    assert proc.returncode != 0
    assert "config clean.noise_filter.scorer: 'nope' is not a key of models" in proc.stdout + proc.stderr


TINY_PLOTS = [
    *[
        f"results/plots/{r}/{m}.history.png"
        for r, m in [
            ("r0", "swin_arc"),
            ("r0", "vit_linear"),
            ("a1", "swin_arc"),
            ("a1", "vit_linear"),
            ("b1", "swin_arc"),
        ]
    ],
    "results/plots/r0/pseudo_testa@0.3.png",
    "results/plots/a1/pseudo_testa@0.3.png",
    "results/plots/a1/pseudo_testb@0.3.png",
    "results/plots/val_accuracy.png",
    "results/plots/removals.png",
    "results/plots/class_counts.png",
    "results/plots/round_accuracy.png",
]


@pytest.fixture(scope="module")
def tiny_report(tiny_run):
    t0 = time.perf_counter()
    run_snakemake(tiny_run, "--configfile", str(REPO / "config/tiny.yaml"), "--report", "report.html")
    print(f"report: {time.perf_counter() - t0:.1f}s")
    return tiny_run / "report.html"


def embedded_files(html: str) -> set[bytes]:
    """Every file the report carries inline, read from its base64 data URIs (RFC 2397) only, not
    from how Snakemake's page script organises them."""
    return {base64.b64decode(data) for data in re.findall(r"data:[\w/+.-]+[^,\"']*;base64,([A-Za-z0-9+/=]+)", html)}


def test_report_embeds_every_plot_and_table(tiny_run, tiny_report):
    html = tiny_report.read_text(encoding="utf-8")
    embedded = embedded_files(html)
    for path in [*TINY_PLOTS, "results/summary.tsv", "results/final/class_counts.tsv", "results/clean/removed.tsv"]:
        assert (tiny_run / path).read_bytes() in embedded, f"{path} is not in the report"
    # our captions, rendered: the history plot names its model and round
    assert "<strong>swin_arc</strong> in round <strong>b1</strong>" in html
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=[\"']https?:", html)  # nothing fetched online
    classes = (tiny_run / "results/clean/classes.tsv").read_text().splitlines()
    assert classes == ["id\tname"] + [f"{i}\t{i:04d}" for i in range(6)]  # the class list (rule all)


def chromium(*args, cwd):
    exe = shutil.which("chromium")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={cwd / 'profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (`make install` adds it)")
def test_report_opens_in_headless_chromium_with_our_categories(tiny_report, tmp_path):
    """Load the report in a real browser: the page it builds lists our categories and describes the method."""
    dom = chromium("--dump-dom", tiny_report.as_uri(), cwd=tmp_path)
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)).split())
    for category in ["Training curves", "Validation accuracy", "Pseudo-labels", "Cleaning", "Submission", "Summary"]:
        assert category in text
    assert "webfg reproduces the 1st-place recipe" in text  # the method description


@pytest.mark.demo
def test_demo_runs_every_round_to_a_valid_submission(tmp_path, capsys):
    """The full demo (config/demo.yaml), as `make demo` runs it, checked for what cannot fail by chance.

    The size of the gain moves with retraining noise (about a point): it is measured over
    seeds by bench/bench_demo.py, not gated here.
    """
    t0 = time.perf_counter()
    run_snakemake(tmp_path, "--configfile", str(REPO / "config/demo.yaml"))
    minutes = (time.perf_counter() - t0) / 60
    lines = (tmp_path / "results/summary.tsv").read_text().splitlines()
    with capsys.disabled():  # the measured table belongs in the CI log
        print(f"\ndemo end to end: {minutes:.1f} min\n" + "\n".join(lines))
    table = [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    rounds = table[: [r["stage"] for r in table].index("final_ensemble")]
    answers = load_answers(tmp_path / "data/demo/answers/testb.txt")
    num_classes = len(set(answers.values()))
    assert rounds[0]["stage"] == "r0" and len(rounds) >= 2
    for r in rounds:
        assert float(r["accuracy_testb"]) > 2 / num_classes, f"round {r['stage']} near chance: {r}"
    r0, last = float(rounds[0]["accuracy_testb"]), float(rounds[-1]["accuracy_testb"])
    assert last > r0, f"final round {rounds[-1]['stage']} {last:.4f} vs r0 {r0:.4f}"
    rows = list(csv.reader((tmp_path / "results/submit.csv").open(encoding="utf-8")))
    assert sorted(name for name, _ in rows) == sorted(Path(rel).name for rel in answers)
    assert all(re.fullmatch(r"\d{4}", label) and int(label) < num_classes for _, label in rows)
