"""Train one model: in this process, or as one process per GPU (srun in a Slurm job, torchrun here),
on GPU slots of its own when jobs share a machine (webfg.gpuslots)."""

import sys

from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

import json
import shlex
import subprocess

from webfg.cluster import launch_command
from webfg.gpuslots import gpu_slots
from webfg.io import log_to_stderr

res = snakemake.resources
argv = [
    "train",
    "--config-json",
    json.dumps(snakemake.params.model),
    "--root",
    snakemake.params.root,
    "--train-list",
    snakemake.input.train,
    "--val-list",
    snakemake.input.val,
    "--stats",
    snakemake.input.stats,
    "--out",
    snakemake.output.model,
    "--state-dir",
    snakemake.params.state_dir,
    # one thread policy for both paths: the rule's threads (webfg.cluster.job_threads, the
    # node's CPUs of the job); the trainer divides them among its processes on the node
    "--threads",
    str(snakemake.threads),
]
cmd = launch_command(argv, res.nodes, res.tasks_per_node, res.cpus_per_task, res.gpu > 0)
# the GPUs are chosen (CUDA_VISIBLE_DEVICES) before torch is imported or torchrun started
with gpu_slots(res.gpu // res.nodes, log=log_to_stderr):
    if cmd is None:
        from webfg.config import ModelConfig
        from webfg.io import read_json
        from webfg.train import train

        cfg = ModelConfig.from_dict(snakemake.params.model, where=f"models.{snakemake.wildcards.model}")
        train(
            cfg,
            snakemake.params.root,
            snakemake.input.train,
            snakemake.input.val,
            read_json(snakemake.input.stats)["num_classes"],
            snakemake.output.model,
            state_dir=snakemake.params.state_dir,
            threads=snakemake.threads,
            log=log_to_stderr,
        )
    else:
        print(f"launch: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        rc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.STDOUT).returncode
        if rc:
            sys.exit(f"training of {'/'.join(map(str, snakemake.wildcards))} exited with status {rc}")
