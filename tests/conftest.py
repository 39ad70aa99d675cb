"""Fixtures shared by test modules."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


SCOPE_MARKERS = {"dag", "slurm", "demo"}


def pytest_collection_modifyitems(items):
    """Every test without a dag, slurm or demo marker is a unit test (`pytest -m unit`)."""
    for item in items:
        if not SCOPE_MARKERS & {m.name for m in item.iter_markers()}:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """config/tiny.yaml run locally (--cores 2), once per session.

    test_workflow checks its results; test_slurm compares the same configuration run
    through profiles/slurm with it. ``tiny_local_seconds.txt`` in it holds the wall time.
    """
    workdir = tmp_path_factory.mktemp("tiny")
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(REPO / "config/tiny.yaml"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    elapsed = time.perf_counter() - t0
    print(f"tiny pipeline: {elapsed:.0f}s")
    (workdir / "tiny_local_seconds.txt").write_text(f"{elapsed:.1f}\n")
    return workdir
