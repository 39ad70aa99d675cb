"""profiles/slurm timings beside the same work without Slurm, hardware and versions printed.

    python bench/bench_slurm.py            # dry run of the 17-model plan, plain and with profiles/slurm (target <= 5 s)
    python bench/bench_slurm.py --tiny     # also config/tiny.yaml locally and through a running Slurm
                                           # (.ci/start-local-slurm.sh first; target: Slurm adds <= 2 min)

Each run uses a fresh temporary working directory; the repository's results/ is untouched.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workflow import REPO, SNAKEMAKE, environment, fake_accv_tree  # noqa: E402

SLURM = ["--profile", str(REPO / "profiles/slurm")]
CI_LAYER = ["--workflow-profile", str(REPO / "tests/profiles/slurm-ci")]
SITE = {"WEBFG_SLURM_GPU_PARTITION": "debug", "WEBFG_SLURM_CPU_PARTITION": "debug"}


def run(workdir: Path, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **SITE},
    )
    return time.perf_counter() - t0, proc.stdout + proc.stderr


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    print(environment())
    for name, extra in [("plain", ["--cores", "2"]), ("profiles/slurm", SLURM)]:
        times = []
        for _ in range(a.runs):
            with tempfile.TemporaryDirectory() as tmp:
                fake_accv_tree(Path(tmp))
                t, out = run(Path(tmp), *extra, "-n", "--configfile", str(REPO / "config/config.yaml"))
                times.append(t)
        print(
            f"dry run, 17-model plan, {name}: {statistics.mean(times):.2f} s mean, "
            f"{min(times):.2f}-{max(times):.2f} s over {a.runs} runs (target <= 5 s)"
        )
    requests = sorted(
        {
            re.sub(r"tmpdir=\S+ |disk\S+ |mem=\S+ [GM]B, |mem_mib=\d+, ", "", line.strip())
            for line in out.splitlines()
            if "gpu=" in line
        }
    )
    print("GPU requests in that plan:\n  " + "\n  ".join(requests))
    if a.tiny:
        configs = ["--configfile", str(REPO / "config/tiny.yaml")]
        with tempfile.TemporaryDirectory() as tmp:
            local, _ = run(Path(tmp), "--cores", "2", "results/submit.zip", *configs)
        with tempfile.TemporaryDirectory() as tmp:
            slurm, _ = run(
                Path(tmp),
                *SLURM,
                *CI_LAYER,
                "results/submit.zip",
                *configs,
                str(REPO / "tests/profiles/slurm-ci/tiny-resources.yaml"),
            )
        print(
            f"tiny pipeline: local {local:.0f} s, through Slurm {slurm:.0f} s "
            f"(+{slurm - local:.0f} s; target <= +120 s)"
        )


if __name__ == "__main__":
    main()
