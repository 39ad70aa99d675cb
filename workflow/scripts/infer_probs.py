"""Predict val and the given splits with one model; outputs are <split>.npy/.rows.txt/.json."""

from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from pathlib import Path

from webfg.gpuslots import gpu_slots
from webfg.io import log_to_stderr, read_split_list

val = read_split_list(snakemake.input.val)
out_dir = Path(snakemake.output[0]).parent
splits = {}
for name, listing in zip([s for s in snakemake.params.splits if s != "val"], snakemake.input.splits):
    rows = read_split_list(listing, labelled=name == "train")
    splits[name] = ([r[0] for r in rows] if name == "train" else rows, out_dir / name)
if "val" in snakemake.params.splits:
    splits["val"] = (None, out_dir / "val")
# a GPU of its own (CUDA_VISIBLE_DEVICES) before torch is imported
with gpu_slots(snakemake.resources.gpu, log=log_to_stderr):
    from webfg.infer import infer_splits

    infer_splits(
        snakemake.input.model,
        snakemake.params.root,
        val,
        splits,
        model_name=f"{snakemake.wildcards.round}/{snakemake.wildcards.model}",
        threads=snakemake.threads,
        log=log_to_stderr,
    )
