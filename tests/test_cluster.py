"""webfg.cluster: model resources -> job geometry, Slurm partition limits, the launcher's choice."""

from __future__ import annotations

import sys

import pytest

from webfg.cli import main
from webfg.cluster import ResourceError, check_fits, job_geometry, launch_command, parse_sinfo

SINFO = "debug*|1|gpu:2\ngpu|3|gpu:a100:8(S:0-1)\ngpu|1|gpu:a100:4,gpu:v100:2\ncpu|10|(null)\n"


def test_geometry_is_one_process_per_gpu_spread_over_nodes():
    g = job_geometry({"gpus": 16, "nodes": 2, "cpus_per_gpu": 8}, "models.vit.resources")
    assert (g["tasks_per_node"], g["cpus_per_task"], g["mem_mb"], g["runtime"]) == (8, 8, 4000, 120)
    assert job_geometry({}, "x")["tasks_per_node"] == 1  # CPU-only: one process


@pytest.mark.parametrize("res, key, hint", [
    ({"gpus": 16, "nodes": 3}, "models.vit.resources: gpus 16 do not divide into nodes 3",
     "set models.vit.resources.nodes to one of [1, 2, 4, 8, 16]"),
    ({"gpus": 0, "nodes": 2}, "models.vit.resources.nodes: 2 nodes for a CPU-only job", "set models.vit.resources.nodes to 1"),
])
def test_geometry_errors_name_the_key_to_change(res, key, hint):
    with pytest.raises(ResourceError) as e:
        job_geometry(res, "models.vit.resources")
    assert key in str(e.value) and hint in str(e.value)


def test_sinfo_gives_each_partitions_gpus_per_node_and_node_count():
    parts = parse_sinfo(SINFO)
    assert parts == {
        "debug": {"gpus_per_node": 2, "nodes": 1, "default": True},
        "gpu": {"gpus_per_node": 8, "nodes": 4, "default": False},
        "cpu": {"gpus_per_node": 0, "nodes": 10, "default": False},
    }


def test_requests_larger_than_the_partition_are_refused_with_the_fix():
    parts = parse_sinfo(SINFO)
    check_fits("vit", job_geometry({"gpus": 16, "nodes": 2}, "x"), parts, "gpu")  # 8 per node: fits
    with pytest.raises(ResourceError, match=r"models.vit.resources: 16 GPUs on 1 node\(s\) = 16 per node, but Slurm "
                                            r"partition 'gpu' has at most 8 GPUs per node; set models.vit.resources"
                                            r".nodes to 2$"):
        check_fits("vit", job_geometry({"gpus": 16}, "x"), parts, "gpu")
    with pytest.raises(ResourceError, match="partition 'debug' has at most 2 GPUs per node; lower "
                                            r"models.vit.resources.gpus to at most 2 \(1 node\(s\) x 2\)"):
        check_fits("vit", job_geometry({"gpus": 4}, "x"), parts, "")  # the default partition, one node
    with pytest.raises(ResourceError, match="set models.vit.resources.nodes to 4$"):  # 12 GPUs: 3 per node
        check_fits("vit", job_geometry({"gpus": 12}, "x"), parse_sinfo("gpu|4|gpu:3"), "gpu")
    with pytest.raises(ResourceError, match="models.vit.resources.nodes: 8 nodes, but Slurm partition 'gpu' has 4"):
        check_fits("vit", job_geometry({"gpus": 16, "nodes": 8}, "x"), parts, "gpu")
    with pytest.raises(ResourceError, match="pick a partition with GPUs"):
        check_fits("vit", job_geometry({"gpus": 1}, "x"), parts, "cpu")
    with pytest.raises(ResourceError, match="'gpux' .* is not one of"):
        check_fits("vit", job_geometry({"gpus": 1}, "x"), parts, "gpux")
    check_fits("cpu_model", job_geometry({}, "x"), parts, "cpu")


def test_launcher_uses_srun_in_a_batch_script_torchrun_on_one_machine_else_this_process():
    argv = ["train", "--config", "m.yaml"]
    batch = {"SLURM_JOB_ID": "7"}  # what the jobstep leaves of the Slurm environment
    cmd = launch_command(argv, 2, 8, 6, True, env=batch)
    assert cmd[:6] == ["srun", "--nodes=2", "--ntasks-per-node=8", "--cpus-per-task=6", "--kill-on-bad-exit=1",
                       "--unbuffered"]
    assert cmd[6] == "--gpus-per-task=1" and cmd[7:] == [sys.executable, "-m", "webfg.cli", *argv]
    # a single process is an srun task too, so Slurm's signals reach the trainer, not Snakemake
    assert launch_command(argv, 1, 1, 2, False, env=batch)[:3] == ["srun", "--nodes=1", "--ntasks-per-node=1"]
    assert launch_command(argv, 2, 8, 6, True, env={**batch, "SLURM_PROCID": "3"}) is None  # already a rank
    assert launch_command(argv, 1, 1, 2, True, env={}) is None
    cmd = launch_command(argv, 1, 4, 2, True, env={})
    assert cmd[0].endswith("torchrun") and cmd[1:] == ["--standalone", "--nproc-per-node=4", "-m", "webfg.cli", *argv]
    with pytest.raises(ResourceError, match="2 nodes requested outside Slurm"):
        launch_command(argv, 2, 4, 2, True, env={})


def test_launch_without_a_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["launch", "--tasks-per-node", "2"])
    assert e.value.code == 2
    assert "webfg launch: error: give the command to start after --" in capsys.readouterr().err
