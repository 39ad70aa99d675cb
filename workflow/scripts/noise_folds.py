from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from pathlib import Path

from webfg.io import log_to_stderr, read_json
from webfg.noise import write_folds

write_folds(
    snakemake.input.train,
    snakemake.input.val,
    Path(snakemake.output.folds).parent,
    k=snakemake.params.folds,
    seed=snakemake.params.seed,
    num_classes=read_json(snakemake.input.stats)["num_classes"],
    log=log_to_stderr,
)
