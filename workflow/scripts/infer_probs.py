"""Predict val and the given lists with one model; outputs are <list stem>.npy/.rows.txt/.json."""

from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from pathlib import Path

from webfg.gpuslots import gpu_slots
from webfg.io import log_to_stderr

# a GPU of its own (CUDA_VISIBLE_DEVICES) before torch is imported
with gpu_slots(snakemake.resources.gpu, log=log_to_stderr):
    from webfg.infer import infer_lists

    infer_lists(
        snakemake.input.model,
        snakemake.params.root,
        snakemake.input.val,
        snakemake.input.splits,
        Path(snakemake.output[0]).parent,
        with_val=snakemake.params.with_val,
        model_name=f"{snakemake.wildcards.round}/{snakemake.wildcards.model}",
        threads=snakemake.threads,
        log=log_to_stderr,
    )
