"""Fixtures shared by test modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from runner import REPO, run_snakemake

SCOPE_MARKERS = {"dag", "slurm", "demo"}


def pytest_collection_modifyitems(items):
    """Every test without a dag, slurm or demo marker is a unit test (`pytest -m unit`)."""
    for item in items:
        if not SCOPE_MARKERS & {m.name for m in item.iter_markers()}:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session", autouse=True)
def shared_arch_cache(tmp_path_factory):
    """One timm model list for every Snakemake run of the session (WEBFG_CACHE_DIR, read by
    common.smk): each fresh working directory would otherwise import torch to list it (5-10 s)."""
    cache = tmp_path_factory.mktemp("webfg-cache")
    saved = os.environ.get("WEBFG_CACHE_DIR")
    os.environ["WEBFG_CACHE_DIR"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("WEBFG_CACHE_DIR", None)
    else:
        os.environ["WEBFG_CACHE_DIR"] = saved


@pytest.fixture(scope="session", autouse=True)
def slurm_config_query_without_the_wait(tmp_path_factory):
    """Where Slurm's tools are installed but no controller answers (after `make test-slurm`
    stopped the local one), Snakemake's Slurm plugin runs `scontrol show config` at every start,
    even of a local dry run, and that waits ~9 s for the controller before failing. For this
    session, `scontrol show config` fails at once instead, as it would after the wait; every other
    scontrol call is the real one, and nothing changes where a controller answers (CI) or where
    Slurm is not installed."""
    real = shutil.which("scontrol")
    if real is None or subprocess.run([real, "ping"], capture_output=True).returncode == 0:
        yield None
        return
    shim = tmp_path_factory.mktemp("slurm-down") / "scontrol"
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "show config" ]; then echo "scontrol: no Slurm controller answers (tests)" >&2; exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"{shim.parent}{os.pathsep}{saved}"
    yield shim
    os.environ["PATH"] = saved


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """config/tiny.yaml run locally (--cores 2), once per session.

    test_workflow checks its results; test_slurm compares the same configuration run
    through profiles/slurm with it. ``tiny_local_seconds.txt`` in it holds the wall time.
    """
    workdir = tmp_path_factory.mktemp("tiny")
    t0 = time.perf_counter()
    run_snakemake(workdir, configs=[REPO / "config/tiny.yaml"])
    elapsed = time.perf_counter() - t0
    print(f"tiny pipeline: {elapsed:.0f}s")
    (workdir / "tiny_local_seconds.txt").write_text(f"{elapsed:.1f}\n")
    return workdir
