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

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
            f"timm {timm.__version__}, numpy {numpy.__version__}, snakemake {snakemake.__version__}")


def run(workdir: Path, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
                   check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0


def fake_accv_tree(root: Path) -> None:
    for rel in ["data/accv/train/0000/a.jpg", "data/accv/testa/x.jpg", "data/accv/testb/y.jpg",
                "pretrained/mae_vit_large_train_testa_1600e.pth", "pretrained/swinv2_large_patch4_window12_192_22k.pth",
                "pretrained/swinv2_base_patch4_window12_192_22k.pth"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--demo", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    print(environment())
    times = []
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory() as tmp:
            fake_accv_tree(Path(tmp))
            times.append(run(Path(tmp), "-n", "--configfile", str(REPO / "config/config.yaml")))
    print(f"dry run, 17-model plan: {statistics.mean(times):.2f} s mean, "
          f"{min(times):.2f}-{max(times):.2f} s over {a.runs} runs (target <= 5 s)")
    if a.demo:
        with tempfile.TemporaryDirectory() as tmp:
            t = run(Path(tmp), "--configfile", str(REPO / "config/demo.yaml"))
            print(f"demo end to end: {t / 60:.1f} min (target <= 10 min)")
            print((Path(tmp) / "results/summary.tsv").read_text())


if __name__ == "__main__":
    main()
