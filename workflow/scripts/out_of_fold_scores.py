from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import log_to_stderr
from webfg.noise import assemble_out_of_fold

n = assemble_out_of_fold(list(snakemake.input), snakemake.output[0])
log_to_stderr(f"out-of-fold scores: {n} images from {len(snakemake.input)} folds")
