from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import load_predictions, log_to_stderr
from webfg.postprocess import redistribute_labels

probs, relpaths, _ = load_predictions(snakemake.input[0])
redistribute_labels(
    probs,
    relpaths,
    snakemake.params.method,
    snakemake.params.k,
    snakemake.output.labels,
    snakemake.output.counts,
    log=log_to_stderr,
    strength=snakemake.params.strength,
    temperature=snakemake.params.temperature,
    candidates=snakemake.params.candidates,
)
