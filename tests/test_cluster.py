"""webfg.cluster: model resources -> job geometry, Slurm partition limits, the launcher's choice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from runner import REPO, run_snakemake

from webfg.cli import main
from webfg.cluster import (
    ResourceError,
    check_cpu_job,
    check_fits,
    check_local_gpus,
    check_workers,
    job_geometry,
    job_threads,
    launch_command,
    parse_sinfo,
)

SINFO = (
    "debug*|1|gpu:2|2|7900\ngpu|3|gpu:a100:8(S:0-1)|128|1000000\ngpu|1|gpu:a100:4,gpu:v100:2|64+|500000\n"
    "cpu|10|(null)|32|192000\n"
)


def test_geometry_is_one_process_per_gpu_spread_over_nodes():
    g = job_geometry({"gpus": 16, "nodes": 2, "cpus_per_gpu": 8}, "models.vit.resources")
    assert (g["tasks_per_node"], g["cpus_per_task"], g["mem_mb"], g["runtime"]) == (8, 8, 4000, 120)
    assert job_geometry({}, "x")["tasks_per_node"] == 1  # CPU-only: one process


@pytest.mark.parametrize(
    "res, key, hint",
    [
        (
            {"gpus": 16, "nodes": 3},
            "models.vit.resources: gpus 16 do not divide into nodes 3",
            "set models.vit.resources.nodes to one of [1, 2, 4, 8, 16]",
        ),
        (
            {"gpus": 0, "nodes": 2},
            "models.vit.resources.nodes: 2 nodes for a CPU-only job",
            "set models.vit.resources.nodes to 1",
        ),
    ],
)
def test_geometry_errors_name_the_key_to_change(res, key, hint):
    with pytest.raises(ResourceError) as e:
        job_geometry(res, "models.vit.resources")
    assert key in str(e.value) and hint in str(e.value)


def test_sinfo_gives_each_partitions_gpus_per_node_and_node_count():
    parts = parse_sinfo(SINFO)
    assert parts == {
        "debug": {"gpus_per_node": 2, "cpus_per_node": 2, "mem_mb": 7900, "nodes": 1, "default": True},
        "gpu": {"gpus_per_node": 8, "cpus_per_node": 128, "mem_mb": 1000000, "nodes": 4, "default": False},
        "cpu": {"gpus_per_node": 0, "cpus_per_node": 32, "mem_mb": 192000, "nodes": 10, "default": False},
    }
    assert parse_sinfo("gpu|4|gpu:3")["gpu"]["cpus_per_node"] == 0  # CPUs and memory not asked: unknown


def test_cpus_and_memory_larger_than_any_node_are_refused_naming_the_key():
    parts = parse_sinfo(SINFO)
    check_fits("vit", job_geometry({"gpus": 8, "cpus_per_gpu": 16, "mem_mb": 900000}, "x"), parts, "gpu")
    with pytest.raises(
        ResourceError,
        match=r"^models.vit.resources.cpus_per_gpu \(x 8 GPUs per node\): 256 CPUs per "
        r"node, but the nodes of Slurm partition 'gpu' have at most 128; lower",
    ):
        check_fits("vit", job_geometry({"gpus": 8, "cpus_per_gpu": 32}, "x"), parts, "gpu")
    with pytest.raises(
        ResourceError,
        match=r"^models.vit.resources.mem_mb: 16000 MB per node, but the nodes of Slurm "
        r"partition 'debug' have at most 7900 MB; lower models.vit.resources"
        r".mem_mb to at most 7900$",
    ):
        check_fits("vit", job_geometry({"gpus": 1, "cpus_per_gpu": 1, "mem_mb": 16000}, "x"), parts, "")
    with pytest.raises(ResourceError, match=r"^models.demo.resources.cpus_per_gpu: 4 CPUs per node"):
        check_fits("demo", job_geometry({}, "x"), parts, "debug")  # CPU-only: one process of 4 CPUs
    check_cpu_job("clean.resources", 32, 192000, parts, "cpu")
    with pytest.raises(
        ResourceError,
        match=r"^clean.resources.cpus: 4 CPUs per node, but the nodes of Slurm "
        r"partition 'debug' have at most 2; lower clean.resources.cpus$",
    ):
        check_cpu_job("clean.resources", 4, 1000, parts, "")
    with pytest.raises(ResourceError, match=r"'nope' \(WEBFG_SLURM_CPU_PARTITION\) is not one of"):
        check_cpu_job("clean.resources", 1, 1000, parts, "nope")


def test_requests_larger_than_the_partition_are_refused_with_the_fix():
    parts = parse_sinfo(SINFO)
    check_fits("vit", job_geometry({"gpus": 16, "nodes": 2}, "x"), parts, "gpu")  # 8 per node: fits
    with pytest.raises(
        ResourceError,
        match=r"models.vit.resources: 16 GPUs on 1 node\(s\) = 16 per node, but Slurm "
        r"partition 'gpu' has at most 8 GPUs per node; set models.vit.resources"
        r".nodes to 2$",
    ):
        check_fits("vit", job_geometry({"gpus": 16}, "x"), parts, "gpu")
    with pytest.raises(
        ResourceError,
        match="partition 'debug' has at most 2 GPUs per node; lower "
        r"models.vit.resources.gpus to at most 2 \(1 node\(s\) x 2\)",
    ):
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
    assert cmd[:6] == [
        "srun",
        "--nodes=2",
        "--ntasks-per-node=8",
        "--cpus-per-task=6",
        "--kill-on-bad-exit=1",
        "--unbuffered",
    ]
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


# ---- one machine, several GPUs: threads sized to the job, GPU slots, requests checked before any job


def test_jobs_take_their_cpus_per_gpu_at_most_the_machine():
    assert job_threads(job_geometry({}, "x"), 2) == 2  # a CPU-only job: cpus_per_gpu (4), at most the machine
    assert job_threads(job_geometry({}, "x"), 64) == 4
    assert job_threads(job_geometry({"cpus_per_gpu": 1}, "x"), 2) == 1  # the demo: two trainings side by side
    assert job_threads(job_geometry({"gpus": 1, "cpus_per_gpu": 8}, "x"), 64) == 8
    assert job_threads(job_geometry({"gpus": 4, "cpus_per_gpu": 8}, "x"), 64) == 32
    assert job_threads(job_geometry({"gpus": 16, "nodes": 2, "cpus_per_gpu": 8}, "x"), 128) == 64  # one node's
    assert job_threads(job_geometry({"gpus": 4, "cpus_per_gpu": 8}, "x"), 16) == 16  # never above the machine


def test_gpu_slots_are_disjoint_and_freed(tmp_path):
    from webfg.gpuslots import gpu_slots, machine_gpus
    from webfg.io import InputError

    assert machine_gpus({"WEBFG_GPU_IDS": "2,3", "CUDA_VISIBLE_DEVICES": "0"}) == ["2", "3"]
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "1,0"}) == ["1", "0"] and machine_gpus({"WEBFG_GPU_IDS": ""}) == []
    base = {"WEBFG_GPU_IDS": "0,1,2", "WEBFG_GPU_LOCK_DIR": str(tmp_path)}
    a, b, c = dict(base), dict(base), dict(base)
    with gpu_slots(2, log=lambda m: None, environ=a) as first:
        with gpu_slots(1, log=lambda m: None, environ=b) as second:
            assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
            assert a["CUDA_VISIBLE_DEVICES"] == ",".join(first) and b["CUDA_VISIBLE_DEVICES"] == second[0]
            with pytest.raises(InputError, match="no 1 free GPU slot"):
                with gpu_slots(1, log=lambda m: None, environ=c, timeout_s=0):
                    pass
        with gpu_slots(1, log=lambda m: None, environ=c) as third:  # the second job's GPU is free again
            assert third == second
    with pytest.raises(InputError, match="asks for 4 GPU"):
        with gpu_slots(4, environ=dict(base)):
            pass
    slurm = {"SLURM_JOB_ID": "1", "CUDA_VISIBLE_DEVICES": "5"}  # Slurm chose: nothing locked
    with gpu_slots(1, environ=slurm) as ids:
        assert ids == ["5"]


def test_bad_requests_name_the_key():
    with pytest.raises(
        ResourceError,
        match=r"models.vit.num_workers: 9 loader processes per training process "
        r"exceed the 8 CPUs it asks for \(models.vit.resources.cpus_per_gpu\)",
    ):
        check_workers(9, job_geometry({"gpus": 1, "cpus_per_gpu": 8}, "x"), "models.vit")
    check_workers(8, job_geometry({"gpus": 1, "cpus_per_gpu": 8}, "x"), "models.vit")
    check_workers(None, job_geometry({}, "x"), "models.vit")
    with pytest.raises(
        ResourceError,
        match=r"models.vit.resources.gpus: 1 GPU\(s\) requested, but this machine has "
        "none",
    ):
        check_local_gpus({"models.vit.resources.gpus": 1}, [])
    with pytest.raises(ResourceError, match="models.vit.resources.gpus: 8 GPUs on one node, but this machine has 2"):
        check_local_gpus({"models.vit.resources.gpus": 8}, ["0", "1"])
    check_local_gpus({"models.vit.resources.gpus": 0}, [])  # the CPU demo


def test_mae_architecture_must_match_the_model_it_starts():
    from webfg.config import MAEConfig, ModelConfig, check_pretrain_matches

    vit = {"arch": "vit_tiny_patch16_224", "arch_kwargs": {"img_size": 448, "depth": 4}}
    mae = MAEConfig.from_dict({"arch": "vit_tiny_patch16_224", "arch_kwargs": {"img_size": 224, "depth": 4}})
    check_pretrain_matches(ModelConfig.from_dict(vit), mae, "models.v", "pretrain.m")  # img_size may differ
    with pytest.raises(ValueError, match=r"models.v.arch_kwargs.depth: 6 differs from 4 in pretrain.m.arch_kwargs"):
        check_pretrain_matches(
            ModelConfig.from_dict({**vit, "arch_kwargs": {"depth": 6}}), mae, "models.v", "pretrain.m"
        )
    with pytest.raises(ValueError, match=r"models.v.arch: 'vit_small_patch16_224' is not the arch"):
        check_pretrain_matches(
            ModelConfig.from_dict({**vit, "arch": "vit_small_patch16_224"}), mae, "models.v", "pretrain.m"
        )


def _snakemake(workdir, *args, configs=(), env=None):
    """Snakemake on config/tiny.yaml (or ``configs``, merged in order) plus ``args``."""
    return run_snakemake(
        workdir, *args, configs=configs or [REPO / "config/tiny.yaml"], env=env, check=False, timeout=900
    )


@pytest.mark.dag
def test_bad_resources_fail_before_any_job_naming_the_key(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "w.yaml").write_text("models:\n  vit_linear: {num_workers: 5, resources: {cpus_per_gpu: 2}}\n")
    tiny = repo / "config/tiny.yaml"
    out = _snakemake(tmp_path, "-n", configs=[tiny, tmp_path / "w.yaml"])
    assert out.returncode and "models.vit_linear.num_workers: 5 loader processes" in out.stdout + out.stderr
    # a GPU request on a machine with none, in a real run: refused before the first job
    (tmp_path / "g.yaml").write_text("models:\n  vit_linear: {resources: {gpus: 1}}\n")
    out = _snakemake(tmp_path, configs=[tiny, tmp_path / "g.yaml"], env={"WEBFG_GPU_IDS": ""})
    assert out.returncode and "models.vit_linear.resources.gpus: 1 GPU(s) requested, but this machine has none" in (
        out.stdout + out.stderr
    )
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()
    # an MAE encoder of another architecture than the model it starts
    (tmp_path / "m.yaml").write_text("pretrain:\n  vit_mae: {arch_kwargs: {img_size: 32, patch_size: 2, depth: 2}}\n")
    out = _snakemake(
        tmp_path, "-n", configs=[repo / "config/demo.yaml", repo / "config/demo-mae.yaml", tmp_path / "m.yaml"]
    )
    assert out.returncode and "models.vit_linear.arch_kwargs.depth: 4 differs from 2 in pretrain.vit_mae" in (
        out.stdout + out.stderr
    )


@pytest.mark.dag
def test_two_one_gpu_jobs_run_side_by_side_on_disjoint_gpus(tmp_path):
    """profiles/workstation on a machine with 2 GPUs, simulated on the CPU (WEBFG_GPU_IDS):
    the two 1-GPU trainings of the tiny config's first round run at the same time, each
    with 1 of the 2 cores and its own CUDA_VISIBLE_DEVICES (from the job logs)."""
    import re

    (tmp_path / "two.yaml").write_text(
        "models:\n  swin_arc: {resources: {gpus: 1, cpus_per_gpu: 1}}\n"
        "  vit_linear: {resources: {gpus: 1, cpus_per_gpu: 1}}\n"
    )
    from pathlib import Path

    tiny = Path(__file__).resolve().parents[1] / "config/tiny.yaml"
    out = _snakemake(
        tmp_path,
        "results/r0/train/swin_arc.pt",
        "results/r0/train/vit_linear.pt",
        "--resources",
        "gpu=2",
        configs=[tiny, tmp_path / "two.yaml"],
        env={"WEBFG_GPU_IDS": "0,1", "WEBFG_GPU_LOCK_DIR": str(tmp_path / "locks")},
    )
    assert out.returncode == 0, out.stderr[-4000:]
    jobs = {}
    for model in ("swin_arc", "vit_linear"):
        log = (tmp_path / f"logs/r0/train/{model}.log").read_text()
        start = re.search(r"GPU slots: CUDA_VISIBLE_DEVICES=(\S+) start ([\d.]+)", log)
        end = re.search(r"GPU slots: released (\S+) end ([\d.]+)", log)
        assert start and end, log[-2000:]
        assert "threads 1," in log  # its share of the 2 cores
        jobs[model] = (start[1], float(start[2]), float(end[2]))
    (a, a0, a1), (b, b0, b1) = jobs.values()
    assert {a, b} == {"0", "1"}, jobs  # disjoint device lists
    assert max(a0, b0) < min(a1, b1), jobs  # their lifetimes overlap: side by side


def test_resource_defaults_are_the_schemas():
    """A model entry without resources gets what config.schema.yaml documents, read from it."""
    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["models"]["additionalProperties"]["properties"]["resources"]["properties"]
    geometry = job_geometry({}, "models.m.resources")
    assert {k: geometry[k] for k in props} == {k: v["default"] for k, v in props.items()}
    assert job_geometry({"gpus": 2}, "models.m.resources")["cpus_per_gpu"] == props["cpus_per_gpu"]["default"]
