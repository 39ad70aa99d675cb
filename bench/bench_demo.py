"""The demo's pseudo-label gain over several model seeds: mean +- sd, per round.

    python bench/bench_demo.py                  # seeds 0 1 2, config/demo.yaml
    python bench/bench_demo.py --seeds 0 1 --config config/demo.yaml --extra my-overlay.yaml

Each seed is a full `snakemake --configfile config/demo.yaml` run in a fresh temporary
working directory, with every model's `seed` set to that seed (the dataset, its split and
its injected faults stay the same: what varies is the retraining noise). Writes, per round,
testb accuracy, pseudo-label count and precision, and the noise filter's precision/recall,
plus wall time, to bench/results/demo_seeds.tsv (one row per seed and stage) and
bench/results/demo_seeds.md (mean +- sd), and prints the latter. The test suite checks only
what cannot fail by chance (tests/test_workflow.py); the gain target lives here.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
COLUMNS = ["accuracy_testb", "pseudo_images", "pseudo_precision", "removal_precision", "removal_recall"]


def run_seed(
    seed: int, config: Path, extra: list[Path], keep: Path | None, start_from: Path | None = None
) -> tuple[list[dict], float]:
    """One demo run with every model's seed set to ``seed``; its summary rows and wall seconds.
    With ``start_from``, that folder's ``seed<seed>`` (a run kept by ``--keep``) is copied in
    first, so Snakemake reruns only the jobs whose settings differ."""
    names = set()
    for path in (config, *extra):
        names |= set((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("models", {}))
    overlay = {"models": {name: {"seed": seed} for name in sorted(names)}}
    with tempfile.TemporaryDirectory(prefix=f"webfg-demo-seed{seed}-") as tmp:
        workdir = keep / f"seed{seed}" if keep else Path(tmp)
        if start_from:
            shutil.copytree(start_from / f"seed{seed}", workdir, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(workdir / ".snakemake/locks", ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "seed.yaml").write_text(yaml.safe_dump(overlay), encoding="utf-8")
        cmd = [
            str(SNAKEMAKE),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "--cores",
            "2",
            "--configfile",
            str(config),
            *map(str, extra),
            str(workdir / "seed.yaml"),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"seed {seed}: snakemake failed\n{proc.stderr[-4000:]}")
        lines = (workdir / "results/summary.tsv").read_text(encoding="utf-8").splitlines()
    rows = [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    return rows, seconds


def machine() -> str:
    """CPU model, core count and the versions that set the numbers."""
    from importlib.metadata import version

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    libs = ", ".join(f"{p} {version(p)}" for p in ("torch", "timm", "snakemake"))
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores; Python {platform.python_version()}, {libs}; {time.strftime('%Y-%m-%d')}"


def mean_sd(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} +- {statistics.stdev(values):.2g}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", type=Path, default=REPO / "config/demo.yaml")
    ap.add_argument("--extra", type=Path, nargs="*", default=[], help="more config files, applied after --config")
    ap.add_argument("--keep", type=Path, help="keep each seed's working directory under this folder")
    ap.add_argument(
        "--start-from",
        type=Path,
        help="a --keep folder of an earlier run: each seed starts from its results, so only the rounds whose"
        " settings differ rerun (e.g. r0 and the noise filter are reused when only the pseudo scheme changes);"
        " wall time is then that of the rerun part",
    )
    ap.add_argument("--name", default="demo_seeds", help="file name stem under --out")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results")
    a = ap.parse_args(argv)

    per_seed, seconds = {}, {}
    for seed in a.seeds:
        per_seed[seed], seconds[seed] = run_seed(
            seed, a.config.resolve(), [p.resolve() for p in a.extra], a.keep, a.start_from
        )
        print(f"seed {seed}: {seconds[seed] / 60:.1f} min", flush=True)

    stages = [r["stage"] for r in per_seed[a.seeds[0]]]
    rounds = stages[: stages.index("final_ensemble")]
    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / f"{a.name}.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(["seed", "stage", *COLUMNS, "wall_s"]) + "\n")
        for seed, rows in per_seed.items():
            for r in rows:
                f.write(
                    "\t".join([str(seed), r["stage"], *(r.get(c, "") for c in COLUMNS), f"{seconds[seed]:.0f}"]) + "\n"
                )

    def values(stage: str, column: str) -> list[float]:
        out = []
        for rows in per_seed.values():
            cell = next((r.get(column, "") for r in rows if r["stage"] == stage), "")
            if cell not in ("", "nan"):
                out.append(float(cell))
        return out

    lines = [
        f"demo over model seeds {a.seeds} ({a.config.name}"
        + "".join(f" + {p.name}" for p in a.extra)
        + (f", starting from {a.start_from}" if a.start_from else "")
        + "), mean +- sd",
        "",
        machine(),
        "",
        "| stage | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(mean_sd(values(stage, c)) for c in COLUMNS) + " |")
    gains = [
        last - first for first, last in zip(values(rounds[0], "accuracy_testb"), values(rounds[-1], "accuracy_testb"))
    ]
    lines += [
        "",
        f"gain {rounds[-1]} - {rounds[0]} (testb): {mean_sd([100 * g for g in gains])} points "
        f"(per seed: {', '.join(f'{100 * g:+.2f}' for g in gains)})",
        f"wall time per run: {mean_sd([s / 60 for s in seconds.values()])} min",
    ]
    text = "\n".join(lines) + "\n"
    (a.out / f"{a.name}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
