"""The noisy-label filter against injected label noise: in-sample scoring (the recipe: the r0
ensemble scores the images it trained on) vs out-of-fold scoring (k small scorers, each scores
the fold it did not see), precision / recall / time, mean +- sd over model seeds.

    python bench/bench_noise_filter.py                         # both datasets, seeds 0 1
    python bench/bench_noise_filter.py --datasets second --seeds 0 1 2

Datasets (built once with webfg.demo into a temporary folder; faults.tsv is the answer key):
  demo    the demo itself (preset full, data seed 0): 30 classes, 1,750 labelled images,
          6 % label noise, half of it within the same source (confusable)
  second  20 classes (Fashion-MNIST 10 x 70, MNIST-5k digits 10 x 40), 8 % label noise, 70 %
          of it within the same source: more and harder noise, another class mix
Each seed sets every model's `seed` (r0's models and the scorer); the data, its split and its
folds stay the same. One Snakemake run per dataset and seed in a fresh working directory, with
config/demo.yaml: first `method: in_sample` with the recipe's thresholds (0.05 / 0.5), then the
demo's out-of-fold setting; each reaches results/clean/noise_removed.tsv. Time: `scoring_s` is
what the filter adds to a demo run (the benchmark seconds of the scoring jobs: score_train for
in-sample, as r0 is trained anyway; train_fold_scorer + score_fold out of fold), `wall_s` the
Snakemake run from the built data to the filter. Each row also scores the other rule on the same
scores (recipe thresholds vs the label's probability alone), computed here from the prediction.
Out of fold, label-probability thresholds around the committed one are scored on the same
predictions too (SWEEP), so a threshold can be chosen on one dataset and checked on the other.
Writes bench/results/<name>.<dataset>.tsv per dataset and bench/results/<name>.md (from every
such tsv present; --name, default noise_filter), and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from webfg.demo import FULL, DemoSpec, SourcePick, build_demo  # noqa: E402
from webfg.io import load_predictions, read_split_list  # noqa: E402

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SECOND = DemoSpec(
    name="second",
    picks=(SourcePick("fashion_mnist", tuple(range(10)), 70), SourcePick("mnist_5k", tuple(range(10)), 40)),
    testa_per_class=20,
    testb_per_class=20,
    truncated=2,
    undecodable=1,
    duplicates=2,
    conflict_pairs=1,
    label_noise=0.08,
    noise_same_source=0.7,
)
DATASETS = {"demo": FULL, "second": SECOND}
RECIPE = (0.05, 0.5)
COLUMNS = ["dataset", "seed", "method", "rule", "removed", "precision", "recall", "scoring_s", "wall_s"]


def noisy_paths(data: Path) -> set[str]:
    with open(data / "answers/faults.tsv", encoding="utf-8", newline="") as f:
        return {r["path"] for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "label_noise"}


def scores(removed: set[str], noisy: set[str]) -> tuple[float, float]:
    hit = len(removed & noisy)
    return (hit / len(removed) if removed else float("nan")), hit / len(noisy)


def rule_removes(pred_stem: Path, lists: list[Path], max_label_prob: float, min_top_prob: float) -> set[str]:
    """The filter's rule applied here to a prediction: the paths of ``lists`` it removes."""
    probs, rows, _ = load_predictions(pred_stem)
    row_of = {p: i for i, p in enumerate(rows)}
    out = set()
    for listing in lists:
        for p, y in read_split_list(listing):
            v = probs[row_of[p]].astype(np.float32)
            if v[y] < max_label_prob and v.argmax() != y and v.max() >= min_top_prob:
                out.add(p)
    return out


def bench_seconds(workdir: Path, pattern: str) -> float:
    total = 0.0
    for tsv in workdir.glob(pattern):
        rows = tsv.read_text().splitlines()
        total += sum(float(line.split("\t")[0]) for line in rows[1:])
    return total


def run(workdir: Path, overlays: list[dict]) -> float:
    files = []
    for i, overlay in enumerate(overlays):
        files.append(workdir / f"overlay{i}.yaml")
        files[-1].write_text(yaml.safe_dump(overlay), encoding="utf-8")
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2"]
    cmd += ["results/clean/noise_removed.tsv", "--configfile", str(REPO / "config/demo.yaml"), *map(str, files)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


# label-probability thresholds scored on the same out-of-fold predictions (the committed one marked)
SWEEP = (0.005, 0.01, 0.015, 0.02, 0.03)


def bench_one(name: str, data: Path, seed: int, tmp: Path, methods=("in_sample", "out_of_fold")) -> list[dict]:
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text(encoding="utf-8"))
    spec = DATASETS[name]
    base = {
        "demo": {"build": False},
        "data": {"root": str(data), "answers": str(data / "answers"), "num_classes": spec.num_classes},
        "models": {m: {"seed": seed} for m in demo["models"]},
    }
    oof = demo["clean"]["noise_filter"]
    work = tmp / f"{name}-seed{seed}"
    work.mkdir()
    noisy = noisy_paths(data)
    res = work / "results/clean"
    rows = []

    def row(method, rule, removed, scoring_s, wall_s):
        p, r = scores(removed, noisy)
        rows.append(dict(zip(COLUMNS, [name, seed, method, rule, len(removed), p, r, scoring_s, wall_s])))
        print(f"{name} seed {seed} {method:12s} {rule:28s} removed {len(removed):4d} P {p:.3f} R {r:.3f}", flush=True)

    rule = (oof["max_label_prob"], oof["min_top_prob"])
    if "in_sample" in methods:
        bench_in_sample(base, work, res, rule, row)
    if "out_of_fold" not in methods:
        return rows
    # out of fold: the demo's setting (scorer, folds, thresholds)
    wall = run(work, [base])
    removed = {r["path"] for r in csv.DictReader(open(res / "noise_removed.tsv", encoding="utf-8"), delimiter="\t")}
    scoring = bench_seconds(work, "benchmarks/clean/noise/*/*.tsv")
    row("out_of_fold", f"label prob {rule[0]}/{rule[1]}", removed, scoring, wall)
    others = [RECIPE] + [(t, rule[1]) for t in SWEEP if t != rule[0]]
    for other in others:  # the recipe's thresholds; tighter and looser ones (sensitivity)
        alt = rule_removes(res / "noise/out_of_fold", [res / "train.txt", res / "val.txt"], *other)
        row("out_of_fold", f"{'recipe' if other == RECIPE else 'label prob'} {other[0]}/{other[1]}", alt, scoring, wall)
    return rows


def rows_from_run(run: Path, name: str = "demo") -> list[dict]:
    """The out-of-fold rows of a finished demo run kept elsewhere (bench_demo.py --keep: its
    folder is ``seed<N>``): the committed rule as the run applied it, and the SWEEP on its scores."""
    import re

    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text(encoding="utf-8"))
    rule = (demo["clean"]["noise_filter"]["max_label_prob"], demo["clean"]["noise_filter"]["min_top_prob"])
    seed = int(re.search(r"seed(\d+)", run.name).group(1))
    res = run / "results/clean"
    noisy = noisy_paths(run / "data/demo")
    scoring = bench_seconds(run, "benchmarks/clean/noise/*/*.tsv")
    rows = []
    with open(res / "noise_removed.tsv", encoding="utf-8") as f:
        committed = {r["path"] for r in csv.DictReader(f, delimiter="\t")}
    for other in [rule, RECIPE] + [(t, rule[1]) for t in SWEEP if t != rule[0]]:
        if other == rule:
            removed = committed
        else:
            removed = rule_removes(res / "noise/out_of_fold", [res / "train.txt", res / "val.txt"], *other)
        p, r = scores(removed, noisy)
        label = f"{'recipe' if other == RECIPE else 'label prob'} {other[0]}/{other[1]}"
        rows.append(dict(zip(COLUMNS, [name, seed, "out_of_fold", label, len(removed), p, r, scoring, float("nan")])))
    return rows


def bench_in_sample(base: dict, work: Path, res: Path, rule: tuple, row) -> None:
    """The recipe: r0 trains on the unfiltered list, its ensemble scores it."""
    overlay = {
        "clean": {"noise_filter": {"method": "in_sample", "max_label_prob": RECIPE[0], "min_top_prob": RECIPE[1]}}
    }
    wall = run(work, [base, overlay])
    removed = {r["path"] for r in csv.DictReader(open(res / "noise_removed.tsv", encoding="utf-8"), delimiter="\t")}
    scoring = bench_seconds(work, "benchmarks/r0/infer/*.train.tsv")
    row("in_sample", f"recipe {RECIPE[0]}/{RECIPE[1]}", removed, scoring, wall)
    alt = rule_removes(work / "results/r0/ensemble/train", [res / "train.txt"], *rule)
    row("in_sample", f"label prob {rule[0]}/{rule[1]}", alt, scoring, wall)


def mean_sd(values: list[float], fmt: str = ".3f") -> str:
    values = [v for v in values if v == v]
    if len(values) < 2:
        return format(values[0], fmt) if values else ""
    return f"{format(statistics.mean(values), fmt)} +- {format(statistics.stdev(values), fmt)}"


def versions() -> str:
    import timm
    import torch

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    return (
        f"{cpu}, {os.cpu_count()} cores (Snakemake --cores 2); Python {platform.python_version()}, "
        f"torch {torch.__version__}, timm {timm.__version__}, numpy {np.__version__}"
    )


def write_markdown(out: Path, name: str = "noise_filter") -> str:
    rows = []
    for tsv in sorted(out.glob(f"{name}.*.tsv")):
        with open(tsv, encoding="utf-8", newline="") as f:
            rows += list(csv.DictReader(f, delimiter="\t"))
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text(encoding="utf-8"))
    nf = demo["clean"]["noise_filter"]
    lines = [
        "# Noisy-label filter: in-sample (recipe) vs out-of-fold scoring",
        "",
        f"{versions()}.",
        f"Out of fold: scorer `{nf['scorer']}` ({demo['models'][nf['scorer']]['arch']}, "
        f"{demo['models'][nf['scorer']]['epochs']} epochs), {nf['folds']} folds. Target (issue 15): "
        "recall >= 0.6 at precision >= 0.8. Mean +- sd over model seeds; `rule` marks the filter's "
        "setting (first row of each method) and the other rule computed on the same scores.",
        "Times depend on a quiet machine (they are CPU-bound; the data is read from the page cache).",
        "",
        "| dataset | method | rule | seeds | removed | precision | recall | scoring s | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["dataset"], r["method"], r["rule"]) for r in rows))
    for key in keys:
        sel = [r for r in rows if (r["dataset"], r["method"], r["rule"]) == key]
        col = lambda c: [float(r[c]) for r in sel]  # noqa: E731
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {','.join(r['seed'] for r in sel)} | {mean_sd(col('removed'), '.1f')} | "
            f"{mean_sd(col('precision'))} | {mean_sd(col('recall'))} | {mean_sd(col('scoring_s'), '.0f')} | "
            f"{mean_sd(col('wall_s'), '.0f')} |"
        )
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text, encoding="utf-8")
    return text


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["demo", "second"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", choices=["in_sample", "out_of_fold"], default=["in_sample", "out_of_fold"])
    ap.add_argument("--name", default="noise_filter", help="file name stem of the results under --out")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results")
    ap.add_argument(
        "--from-runs",
        type=Path,
        nargs="+",
        help="score the demo's kept runs (bench_demo.py --keep DIR: DIR/seed*) instead of running the demo dataset",
    )
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.from_runs:
        write_rows(a.out / f"{a.name}.demo.tsv", [r for run in a.from_runs for r in rows_from_run(run)])
        a.datasets = [d for d in a.datasets if d != "demo"]
    with tempfile.TemporaryDirectory(prefix="webfg-noise-bench-") as tmp:
        tmp = Path(tmp)
        for name in a.datasets:
            data = tmp / f"data-{name}"
            build_demo(data, DATASETS[name], 0)
            rows = [r for seed in a.seeds for r in bench_one(name, data, seed, tmp, a.methods)]
            write_rows(a.out / f"{a.name}.{name}.tsv", rows)
    print(write_markdown(a.out, a.name))


if __name__ == "__main__":
    main()
