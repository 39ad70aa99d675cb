from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import load_predictions, log_to_stderr
from webfg.postprocess import redistribute_labels, train_class_counts

config = snakemake.params.config
probs, relpaths, _ = load_predictions(snakemake.input.ensemble)
counts = None
if config["method"] == "map":
    counts = train_class_counts(snakemake.input.train_list, probs.shape[1])
redistribute_labels(
    probs,
    relpaths,
    config["method"],
    snakemake.output.labels,
    snakemake.output.counts,
    log=log_to_stderr,
    train_counts=counts,
    prefix=snakemake.params.key_prefix,
    **{k: v for k, v in config.items() if k != "method"},
)
