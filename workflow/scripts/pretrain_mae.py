"""MAE pre-training: in this process, or one process per GPU (srun / torchrun), on its own GPU slots."""

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
    "pretrain-mae",
    "--config-json",
    json.dumps(snakemake.params.mae),
    "--root",
    snakemake.params.root,
    "--train-list",
    snakemake.input.train,
    "--unlabelled",
    *snakemake.input.unlabelled,
    "--out",
    snakemake.output.encoder,
    "--state-dir",
    snakemake.params.state_dir,
    "--threads",
    str(snakemake.threads),  # as train_model.py: the rule's threads on both paths
]
cmd = launch_command(argv, res.nodes, res.tasks_per_node, res.cpus_per_task, res.gpu > 0)
with gpu_slots(res.gpu // res.nodes, log=log_to_stderr):
    if cmd is None:
        from webfg.config import MAEConfig
        from webfg.mae import pretrain

        cfg = MAEConfig.from_dict(snakemake.params.mae, where=f"pretrain.{snakemake.wildcards.name}")
        pretrain(
            cfg,
            snakemake.params.root,
            snakemake.input.train,
            snakemake.input.unlabelled,
            snakemake.output.encoder,
            state_dir=snakemake.params.state_dir,
            threads=snakemake.threads,
            log=log_to_stderr,
        )
    else:
        print(f"launch: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        rc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.STDOUT).returncode
        if rc:
            sys.exit(f"pre-training of {snakemake.wildcards.name} exited with status {rc}")
