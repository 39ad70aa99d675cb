from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.clean import filter_noisy
from webfg.io import load_predictions, log_to_stderr

probs, relpaths, _ = load_predictions(snakemake.input.scores)
filter_noisy(
    snakemake.input.train,
    probs,
    relpaths,
    snakemake.output.train,
    snakemake.output.removed,
    max_label_prob=snakemake.params.max_label_prob,
    min_top_prob=snakemake.params.min_top_prob,
    log=log_to_stderr,
)
