"""Where a training job runs: one model's resources -> job geometry, Slurm limits, and the launcher.

A model entry asks for ``gpus`` spread over ``nodes`` (one training process per GPU,
the same number on every node). The Snakemake rules turn that into a Slurm request
(``workflow/rules/train.smk``); inside the job ``webfg launch`` starts the processes:
``srun`` when it runs in a Slurm batch script, ``torchrun`` for several GPUs on one
machine, the command itself otherwise. The trainer then reads its rank from the
environment (``webfg.distributed``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys

from webfg.config import schema_default
from webfg.io import InputError

# a model's resources when its entry leaves them out: the config schema's defaults
DEFAULTS = {
    k: schema_default(f"models.*.resources.{k}") for k in ("gpus", "nodes", "cpus_per_gpu", "mem_mb", "runtime")
}


class ResourceError(InputError):
    """A model's resources cannot be requested; the message names the key to change."""


def job_geometry(resources: dict, where: str) -> dict:
    """The resources with defaults filled in, plus ``tasks_per_node`` and ``cpus_per_task``.

    ``where`` is the config key (``models.<name>.resources``) that error messages name.
    """
    r = {**DEFAULTS, **(resources or {})}
    gpus, nodes = r["gpus"], r["nodes"]
    if gpus == 0 and nodes > 1:
        raise ResourceError(
            f"{where}.nodes: {nodes} nodes for a CPU-only job (gpus: 0); set {where}.nodes to 1 or give it gpus"
        )
    if gpus % nodes:
        divisors = [d for d in range(1, gpus + 1) if gpus % d == 0]
        raise ResourceError(
            f"{where}: gpus {gpus} do not divide into nodes {nodes} (one process per GPU, "
            f"the same number on every node); set {where}.nodes to one of {divisors}"
        )
    r["tasks_per_node"] = max(1, gpus // nodes)
    # CPUs of one training process (one per GPU); a CPU-only job's CPUs in all
    r["cpus_per_task"] = r["cpus_per_gpu"]
    return r


def job_threads(geometry: dict, cores: int) -> int:
    """Snakemake ``threads`` of a torch job on one machine: its CPUs, ``cpus_per_gpu`` per GPU
    on the node (a CPU-only job: ``cpus_per_gpu`` in all), never more than the machine has,
    so that jobs that fit run side by side. Small models train faster as several
    one-thread jobs than as one job on every core (bench/README.md, the demo)."""
    return max(1, min(cores, geometry["cpus_per_task"] * geometry["tasks_per_node"]))


def check_workers(num_workers: int | None, geometry: dict, where: str) -> None:
    """Loader processes must fit the CPUs each training process asks for."""
    if num_workers is not None and num_workers > geometry["cpus_per_task"]:
        raise ResourceError(
            f"{where}.num_workers: {num_workers} loader processes per training process exceed the "
            f"{geometry['cpus_per_task']} CPUs it asks for ({where}.resources.cpus_per_gpu); lower "
            f"num_workers or leave it unset (then cpus_per_gpu - 1 on a GPU)"
        )


def check_local_gpus(requests: dict[str, int], gpus_here: list[str]) -> None:
    """Outside Slurm, every GPU request must be one this machine can serve.

    ``requests``: config key (``models.<name>.resources.gpus``) -> GPUs per node. A CPU
    machine runs only ``gpus: 0`` entries (the CPU demo's explicit setting)."""
    for key, gpus in requests.items():
        if gpus and not gpus_here:
            raise ResourceError(
                f"{key}: {gpus} GPU(s) requested, but this machine has none (no /dev/nvidiaN; "
                "WEBFG_GPU_IDS / CUDA_VISIBLE_DEVICES empty); set it to 0 for a CPU run, or submit "
                "with --profile profiles/slurm"
            )
        if gpus > len(gpus_here):
            raise ResourceError(
                f"{key}: {gpus} GPUs on one node, but this machine has {len(gpus_here)} "
                f"({','.join(gpus_here)}); lower it or submit with --profile profiles/slurm"
            )


SINFO_FORMAT = "%P|%D|%G|%c|%m"  # partition, nodes, generic resources, CPUs per node, memory per node (MB)


def parse_sinfo(text: str) -> dict[str, dict]:
    """``sinfo -h -o '%P|%D|%G|%c|%m'`` -> {partition: {gpus_per_node, cpus_per_node, mem_mb, nodes, default}}.

    Each line is one group of nodes; a partition's GPUs, CPUs and memory per node are the
    largest group's (``gpu:8``, ``gpu:a100:8(S:0-1)``, ``gpu:a100:4,gpu:v100:2`` -> 4 and 2 -> 4;
    ``64+`` -> 64). The last two columns may be absent (older callers): then nothing is known of them.
    """
    parts: dict[str, dict] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, nodes, gres, *sizes = line.strip().split("|")
        cpus, mem_mb = ([int(v.rstrip("+")) if v.rstrip("+").isdigit() else 0 for v in sizes] + [0, 0])[:2]
        default = name.endswith("*")
        name = name.rstrip("*")
        gpus = max([int(m) for m in re.findall(r"gpu(?::[^:,()]+)?:(\d+)", gres)] or [0])
        p = parts.setdefault(
            name, {"gpus_per_node": 0, "cpus_per_node": 0, "mem_mb": 0, "nodes": 0, "default": default}
        )
        p["gpus_per_node"] = max(p["gpus_per_node"], gpus)
        p["cpus_per_node"] = max(p["cpus_per_node"], cpus)
        p["mem_mb"] = max(p["mem_mb"], mem_mb)
        p["nodes"] += int(nodes)
    return parts


def _partition(partitions: dict[str, dict], partition: str | None, variable: str) -> tuple[str, dict]:
    if not partition:
        partition = next((n for n, p in partitions.items() if p["default"]), None)
    if partition not in partitions:
        raise ResourceError(f"Slurm partition {partition!r} ({variable}) is not one of {sorted(partitions)} (sinfo)")
    return partition, partitions[partition]


def check_node_size(cpus: int, cpus_key: str, mem_mb: int, mem_key: str, partition: str, p: dict) -> None:
    """Refuse CPUs or memory per node that no node of the partition has (sbatch would refuse the
    job, or it would pend forever), naming the key to lower. 0 in ``p`` = unknown: not checked."""
    if p["cpus_per_node"] and cpus > p["cpus_per_node"]:
        raise ResourceError(
            f"{cpus_key}: {cpus} CPUs per node, but the nodes of Slurm partition {partition!r} "
            f"have at most {p['cpus_per_node']}; lower {cpus_key}"
        )
    if p["mem_mb"] and mem_mb > p["mem_mb"]:
        raise ResourceError(
            f"{mem_key}: {mem_mb} MB per node, but the nodes of Slurm partition {partition!r} "
            f"have at most {p['mem_mb']} MB; lower {mem_key} to at most {p['mem_mb']}"
        )


def check_cpu_job(where: str, cpus: int, mem_mb: int, partitions: dict[str, dict], partition: str | None) -> None:
    """A CPU job (clean_split: ``where`` = clean.resources) against the CPU partition."""
    name, p = _partition(partitions, partition, "WEBFG_SLURM_CPU_PARTITION")
    check_node_size(cpus, f"{where}.cpus", mem_mb, f"{where}.mem_mb", name, p)


def check_fits(model: str, geometry: dict, partitions: dict[str, dict], partition: str | None) -> None:
    """Refuse, before submission, a model whose request the partition can never satisfy."""
    where = f"models.{model}.resources"
    partition, p = _partition(partitions, partition, "WEBFG_SLURM_GPU_PARTITION")
    if geometry["gpus"] == 0:  # a CPU-only model: one process with cpus_per_gpu CPUs
        check_node_size(
            geometry["cpus_per_task"], f"{where}.cpus_per_gpu", geometry["mem_mb"], f"{where}.mem_mb", partition, p
        )
        return
    gpus, per_node, most = geometry["gpus"], geometry["tasks_per_node"], p["gpus_per_node"]
    if per_node > most:
        # the fewest nodes that hold the GPUs evenly, if the partition has that many
        nodes = next((d for d in range(1, gpus + 1) if gpus % d == 0 and gpus // d <= most), None) if most else None
        if not most:
            hint = "pick a partition with GPUs (WEBFG_SLURM_GPU_PARTITION)"
        elif nodes is not None and nodes <= p["nodes"]:
            hint = f"set {where}.nodes to {nodes}"
        else:
            hint = f"lower {where}.gpus to at most {most * p['nodes']} ({p['nodes']} node(s) x {most})"
        raise ResourceError(
            f"{where}: {geometry['gpus']} GPUs on {geometry['nodes']} node(s) = {per_node} per node, "
            f"but Slurm partition {partition!r} has at most {p['gpus_per_node']} GPUs per node; {hint}"
        )
    if geometry["nodes"] > p["nodes"]:
        raise ResourceError(
            f"{where}.nodes: {geometry['nodes']} nodes, but Slurm partition {partition!r} has "
            f"{p['nodes']}; lower {where}.nodes or gpus"
        )
    check_node_size(
        geometry["cpus_per_task"] * per_node,
        f"{where}.cpus_per_gpu (x {per_node} GPUs per node)",
        geometry["mem_mb"],
        f"{where}.mem_mb",
        partition,
        p,
    )


def launch_command(
    argv: list[str], nodes: int, tasks_per_node: int, cpus_per_task: int, gpus: bool, env=os.environ
) -> list[str] | None:
    """The command that starts ``webfg <argv>`` as ``nodes x tasks_per_node`` processes.

    None means: run it in this process. Decided from the environment at run time, so one
    rule serves a Slurm cluster, a multi-GPU workstation and a laptop:

    - in a Slurm batch script (SLURM_JOB_ID set, not yet inside a task): ``srun`` starts
      one task per GPU; the trainer is then the task itself, so Slurm's signals
      (``--signal=USR1@..``, requeue) reach it and not Snakemake.
    - inside a Slurm task (SLURM_PROCID set): this process is already one rank.
    - elsewhere, several processes: ``torchrun --standalone`` on this machine.
    """
    python = [sys.executable, "-m", "webfg.cli", *argv]
    if env.get("SLURM_JOB_ID") and "SLURM_PROCID" not in env:
        cmd = [
            "srun",
            f"--nodes={nodes}",
            f"--ntasks-per-node={tasks_per_node}",
            f"--cpus-per-task={cpus_per_task}",
            "--kill-on-bad-exit=1",
            "--unbuffered",
        ]
        if gpus:
            cmd.append("--gpus-per-task=1")
        return cmd + python
    if "SLURM_PROCID" in env or nodes * tasks_per_node == 1:
        return None
    if nodes > 1:
        raise ResourceError(
            f"{nodes} nodes requested outside Slurm: run multi-node training under Slurm "
            "(profiles/slurm) or set the model's resources.nodes to 1"
        )
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    return [torchrun, "--standalone", f"--nproc-per-node={tasks_per_node}", "-m", "webfg.cli", *argv]
