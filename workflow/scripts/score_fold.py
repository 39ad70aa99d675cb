"""Predict the held-out fold with the scorer that did not train on it."""

from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.gpuslots import gpu_slots
from webfg.io import log_to_stderr, read_split_list

heldout = read_split_list(snakemake.input.heldout)
# a GPU of its own (CUDA_VISIBLE_DEVICES) before torch is imported
with gpu_slots(snakemake.resources.gpu, log=log_to_stderr):
    from webfg.infer import infer_splits

    # the held-out list is the "val" split: predicted once, written under its own stem
    # (as split "train": its rows, train and val images, all lie under train/)
    infer_splits(
        snakemake.input.model,
        snakemake.params.root,
        heldout,
        {"train": (None, snakemake.output[0])},
        model_name=f"noise scorer {snakemake.wildcards.model} fold {snakemake.wildcards.fold}",
        threads=snakemake.threads,
        log=log_to_stderr,
    )
