"""The one way the tests run the workflow: this checkout's Snakefile and package, in a given
working directory, with hub downloads off. ``import runner`` works from any test module
(pytest puts tests/ on sys.path for conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake_cmd(workdir, *args, configs=(), cores: int | None = 2) -> list[str]:
    """``snakemake -s Snakefile -d workdir [--cores N] args... [--configfile configs...]``;
    the config files go last, as their option takes a list. ``cores=None`` for a profile's."""
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    if cores is not None:
        cmd += ["--cores", str(cores)]
    cmd += [str(a) for a in args]
    if configs:
        cmd += ["--configfile", *map(str, configs)]
    return cmd


def snakemake_env(**more: str) -> dict[str, str]:
    """The test process's environment with this checkout's package first and hub downloads off."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, **more}


def run_snakemake(
    workdir, *args, configs=(), cores: int | None = 2, env=None, check: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run Snakemake (see snakemake_cmd) from ``workdir``; with ``check`` a failure raises with
    the ends of its stdout and stderr."""
    cmd = snakemake_cmd(workdir, *args, configs=configs, cores=cores)
    proc = subprocess.run(
        cmd, cwd=workdir, env=snakemake_env(**(env or {})), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
