"""profiles/slurm against a real Slurm: a one-node cluster with fake GPUs on localhost.

.ci/run starts it (.ci/start-local-slurm.sh) before the tests and stops it afterwards;
`make test-slurm` does the same around this module alone. The tests themselves never
start a cluster. Without a Slurm they skip, except in CI (CI or WEBFG_REQUIRE_SLURM=1),
where they fail. The workflow runs with the user's profile plus the test layer
tests/profiles/slurm-ci (polling, sizes for a 2-CPU node); only the site values
(WEBFG_SLURM_*) are set. What Slurm saw is read back with squeue/scontrol (the CI
cluster keeps finished jobs for MinJobAge = 1 h); the run's jobs are taken from its own log.

Time (2 cores): the tiny pipeline through Slurm (~local time + polling), one requeued
training job (~1 min), a few refused or cancelled submissions (~20 s).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from runner import REPO, snakemake_cmd, snakemake_env

pytestmark = pytest.mark.slurm

REQUIRED = bool(os.environ.get("CI")) or os.environ.get("WEBFG_REQUIRE_SLURM") == "1"
CONFIGS = [str(REPO / "config/tiny.yaml"), str(REPO / "tests/profiles/slurm-ci/tiny-resources.yaml")]
SLURM_TOOLS = {
    "sacct",
    "sacctmgr",
    "salloc",
    "sattach",
    "sbatch",
    "sbcast",
    "scancel",
    "scontrol",
    "sinfo",
    "squeue",
    "srun",
    "sshare",
    "sstat",
    "sprio",
    "sreport",
    "sdiag",
    "strigger",
    "scrontab",
}
SITE = {"WEBFG_SLURM_GPU_PARTITION": "debug", "WEBFG_SLURM_CPU_PARTITION": "debug"}


def _up() -> bool:
    return (
        shutil.which("scontrol") is not None
        and subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0
    )


@pytest.fixture(scope="module")
def cluster():
    """A running Slurm, or a skip (a failure in CI). The tests never start one: that changes
    the machine (apt, /etc/slurm), which only `make test-slurm` and .ci/run may do."""
    if not _up():
        why = "no Slurm answers `scontrol ping`: `make test-slurm` starts a local one (root, apt)"
        if REQUIRED:
            pytest.fail(why)
        pytest.skip(why)


def slurm_cmd(workdir, *args, configs=()):
    """Snakemake with the user's profile and the CI layer."""
    profiles = ["--profile", REPO / "profiles/slurm", "--workflow-profile", REPO / "tests/profiles/slurm-ci"]
    return snakemake_cmd(workdir, *profiles, *args, configs=[*CONFIGS, *configs], cores=None)


def env(**more):
    return snakemake_env(**SITE, **more)


def submitted_jobs(log: str) -> list[tuple[str, str]]:
    """(rule, Slurm job id) of every sbatch the run made, read from the run's own log (the plugin's
    "submitted with SLURM jobid N (log: .../rule_<rule>/...)" lines), not from what Slurm still lists."""
    return [
        (rule, job_id) for job_id, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*?rule_(\w+?)/", log)
    ]


def slurm_record(job_id: str) -> dict:
    """scontrol's record of a job (kept MinJobAge after its end: 1 h on the CI cluster)."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    assert proc.returncode == 0, f"Slurm no longer knows job {job_id} (MinJobAge passed?): {proc.stderr.strip()}"
    return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny_slurm")
    t0 = time.perf_counter()
    proc = subprocess.run(
        slurm_cmd(workdir, "results/submit.zip"), cwd=workdir, env=env(), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        raise AssertionError(f"Slurm run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}")
    print(f"tiny pipeline through the local Slurm: {elapsed:.0f}s")
    return workdir, proc.stderr, elapsed


def test_submission_equals_the_local_run(slurm_run, tiny_run):
    workdir, _, elapsed = slurm_run
    assert (workdir / "results/submit.csv").read_bytes() == (tiny_run / "results/submit.csv").read_bytes()
    local = float((tiny_run / "tiny_local_seconds.txt").read_text())
    # target: Slurm adds <= 2 min (polling); printed for the CI log, measured in bench/bench_slurm.py
    print(f"tiny pipeline: local {local:.0f}s, through Slurm {elapsed:.0f}s (+{elapsed - local:.0f}s)")


def test_each_job_asked_slurm_for_its_gpus_and_light_jobs_for_none(slurm_run):
    workdir, log, _ = slurm_run
    by_rule: dict[str, list[dict]] = {}
    for rule, job_id in submitted_jobs(log):
        by_rule.setdefault(rule, []).append(slurm_record(job_id))
    # the DAG of config/tiny.yaml: 5 trainings (r0: 2, a1: 2, b1: 1), each inferred; r0 scores train
    assert {r: len(js) for r, js in by_rule.items() if r in ("train_model", "infer_probs", "score_train")} == {
        "train_model": 5,
        "infer_probs": 5,
        "score_train": 2,
    }
    for j in by_rule["train_model"] + by_rule["infer_probs"] + by_rule["score_train"]:
        assert j["JobState"] == "COMPLETED"
        assert j["TresPerJob"] == "gres:gpu:1", j  # sbatch --gpus=1 (tiny-resources.yaml: gpus 1)
        assert j["MinCPUsNode"] == "2" and j["Partition"] == "debug"
    for j in by_rule["train_model"]:
        assert j["TimeLimit"] == "00:10:00" and j["Requeue"] == "1" and j["NumTasks"] == "1"
    # the one heavy CPU step (hashing every image) went to Slurm without a GPU; the light ones
    # (demo data, post-processing of probability files, merge, pseudo-labels, zip) ran locally
    assert by_rule["clean_split"] and all("gpu" not in j.get("TresPerJob", "") for j in by_rule["clean_split"])
    assert set(by_rule) == {"clean_split", "train_model", "infer_probs", "score_train"}, set(by_rule)
    for rule in (
        "demo_data",
        "ensemble_probs",
        "filter_noisy",
        "final_ensemble",
        "redistribute",
        "merge_meta",
        "make_pseudo",
        "zip_submission",
    ):
        assert re.search(rf"^localrule {rule}:", log, re.M), rule
    assert (workdir / "results/a1/meta/train.txt").exists() and (workdir / "results/r0/pseudo/testa@0.3.txt").exists()
    # the training ran as an srun task with its GPU (the trainer, not Snakemake, gets Slurm's signals)
    train_log = (workdir / "logs/r0/train/vit_linear.log").read_text()
    assert re.search(r"launch: srun --nodes=1 --ntasks-per-node=1 --cpus-per-task=2 .*--gpus-per-task=1 ", train_log)


def test_two_gpu_training_runs_ddp_through_srun_and_resumes_after_a_requeue(slurm_run):
    workdir, _, _ = slurm_run
    target = "results/slurm_check/train/vit_requeue.pt"
    state = workdir / "results/slurm_check/train/vit_requeue.state/last.pt"
    proc = subprocess.Popen(
        slurm_cmd(workdir, target), cwd=workdir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = ""
    try:
        deadline = time.time() + 240
        while not state.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert state.exists(), "no checkpoint written"
        job = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True, text=True).stdout
        job_id = next(line.split()[0] for line in job.splitlines() if "vit_requeue" in line)
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        # Slurm holds a requeued job for ~2 min (Reason=BeginTime); release it at once
        for _ in range(60):
            if (
                subprocess.run(
                    ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
                ).stdout.strip()
                == "PENDING"
            ):
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
                break
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    assert proc.returncode == 0, out[-5000:]
    record = dict(
        re.findall(
            r"(\w+)=(\S*)",
            subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout,
        )
    )
    assert record["Restarts"] == "1" and record["JobState"] == "COMPLETED"
    # gpus: 2 -> one job, 2 tasks with a GPU each (mpi resource: no srun -n1 wrapper)
    assert record["TresPerJob"] == "gres:gpu:2" and record["NumTasks"] == "2"
    log = (workdir / "logs/slurm_check/train/vit_requeue.log").read_text()
    assert re.search(r"launch: srun --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 .*--gpus-per-task=1 ", log), log
    assert "2 process(es) on cpu (srun)" in log, log  # rank 0's line: torch.distributed with world size 2 (gloo)
    m = re.search(r"resumed from \S+ (?:after|at) epoch (\d+)", log)
    assert m and 1 <= int(m.group(1)) <= 8, log  # it continued, not from scratch
    history = (workdir / "results/slurm_check/train/vit_requeue.history.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in history[1:]] == [str(e) for e in range(1, 9)]


def test_gpu_request_larger_than_the_partition_is_refused_before_submission(cluster, tmp_path):
    (tmp_path / "big.yaml").write_text("models:\n  swin_arc: {resources: {gpus: 4, cpus_per_gpu: 1}}\n")
    before = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    proc = subprocess.run(
        slurm_cmd(tmp_path, "results/submit.zip", configs=[str(tmp_path / "big.yaml")]),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "models.swin_arc.resources: 4 GPUs on 1 node(s) = 4 per node, but Slurm partition 'debug' has at most "
        "2 GPUs per node; lower models.swin_arc.resources.gpus to at most 2 (1 node(s) x 2)"
    ) in out
    after = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert not set(after) - set(before)  # nothing submitted (older jobs may age out meanwhile)


def test_cpu_job_larger_than_any_node_is_refused_naming_its_key(cluster, tmp_path):
    (tmp_path / "big.yaml").write_text("clean:\n  resources: {cpus: 64}\n")
    proc = subprocess.run(
        slurm_cmd(tmp_path, "results/submit.zip", configs=[str(tmp_path / "big.yaml")]),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert (
        "clean.resources.cpus: 64 CPUs per node, but the nodes of Slurm partition 'debug' have at most 2; "
        "lower clean.resources.cpus"
    ) in proc.stdout + proc.stderr


def test_no_sbatch_on_path_is_one_clear_message(tmp_path):
    # PATH as on a machine without Slurm: every tool of the system's PATH except Slurm's
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        for tool in Path(d).glob("*") if Path(d).is_dir() else []:
            if tool.name not in SLURM_TOOLS and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    proc = subprocess.run(
        slurm_cmd(tmp_path, "results/submit.zip"),
        cwd=tmp_path,
        env=env(PATH=str(bin_dir)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "profiles/slurm submits with sbatch, which is not on PATH" in proc.stdout + proc.stderr


def test_gpus_not_dividing_into_nodes_fail_when_parsed(tmp_path):
    (tmp_path / "odd.yaml").write_text("models:\n  vit_linear: {resources: {gpus: 3, nodes: 2}}\n")
    proc = subprocess.run(
        slurm_cmd(tmp_path, "-n", configs=[str(tmp_path / "odd.yaml")]),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert (
        "models.vit_linear.resources: gpus 3 do not divide into nodes 2 (one process per GPU, the same number "
        "on every node); set models.vit_linear.resources.nodes to one of [1, 3]"
    ) in proc.stdout + proc.stderr


def test_interrupt_cancels_the_runs_slurm_jobs(slurm_run, tmp_path):
    workdir, _, _ = slurm_run
    # train the model again with 200 epochs (minutes), then interrupt it while Slurm runs it
    (tmp_path / "long.yaml").write_text("models:\n  vit_requeue: {epochs: 200}\n")
    proc = subprocess.Popen(
        slurm_cmd(
            workdir, "results/slurm_check/train/vit_requeue.pt", "--force", configs=[str(tmp_path / "long.yaml")]
        ),
        cwd=workdir,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, job_id = time.time() + 120, None
        while job_id is None and time.time() < deadline and proc.poll() is None:
            lines = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True, text=True).stdout
            job_id = next((line.split()[0] for line in lines.splitlines() if "vit_requeue" in line), None)
            time.sleep(0.5)
        assert job_id, "the training job never ran"
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = subprocess.run(
        ["squeue", "--states=all", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    ).stdout.strip()
    assert state == "CANCELLED", out[-3000:]
