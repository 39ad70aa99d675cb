"""Workflow timings with the hardware and versions beside them.

    python bench/bench_workflow.py            # dry run of the 17-model plan (target <= 5 s), 3 runs
    python bench/bench_workflow.py --demo     # also the whole demo end to end (target <= 10 min)

Each run uses a fresh temporary working directory; the repository's results/ is untouched.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def environment() -> str:
    import numpy
    import snakemake
    import timm
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"timm {timm.__version__}, numpy {numpy.__version__}, snakemake {snakemake.__version__}"
    )


def run(workdir: Path, *args: str) -> tuple[float, str]:
    """Wall seconds and stdout of one Snakemake run."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return time.perf_counter() - t0, proc.stdout


def job_total(dry_run_output: str) -> tuple[int, int]:
    """(training jobs, all jobs) from a dry run's 'Job stats' table."""
    table = dry_run_output.split("Job stats:")[1].split("\n\n")[0]
    counts = dict(line.split() for line in table.splitlines()[3:] if len(line.split()) == 2)
    return int(counts["train_model"]), int(counts["total"])


def fake_accv_tree(root: Path) -> None:
    for rel in [
        "data/accv/train/0000/a.jpg",
        "data/accv/testa/x.jpg",
        "data/accv/testb/y.jpg",
        "pretrained/mae_vit_large_train_testa_1600e.pth",
        "pretrained/swinv2_large_patch4_window12_192_22k.pth",
        "pretrained/swinv2_base_patch4_window12_192_22k.pth",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--demo", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "bench/results/workflow.md")
    a = p.parse_args()
    lines = [environment()]
    times = []
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory() as tmp:
            fake_accv_tree(Path(tmp))
            seconds, out = run(Path(tmp), "-n", "--configfile", str(REPO / "config/config.yaml"))
            times.append(seconds)
    trainings, total = job_total(out)
    lines.append(
        f"dry run, 17-model plan ({trainings} training jobs, {total} jobs in all): "
        f"{statistics.mean(times):.2f} s mean, {min(times):.2f}-{max(times):.2f} s over {a.runs} runs "
        "(target <= 5 s)"
    )
    if a.demo:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, _ = run(Path(tmp), "--configfile", str(REPO / "config/demo.yaml"))
            lines.append(f"demo end to end: {seconds / 60:.1f} min (target <= 10 min)")
            lines.append((Path(tmp) / "results/summary.tsv").read_text())
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
