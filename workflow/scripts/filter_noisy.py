from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.clean import filter_noisy
from webfg.io import load_predictions, log_to_stderr, read_split_list, write_split_list

probs, relpaths, _ = load_predictions(snakemake.input.scores)
out_of_fold = snakemake.params.method == "out_of_fold"
filter_noisy(
    snakemake.input.train,
    probs,
    relpaths,
    snakemake.output.train,
    snakemake.output.removed,
    max_label_prob=snakemake.params.max_label_prob,
    min_top_prob=snakemake.params.min_top_prob,
    log=log_to_stderr,
    # out of fold, val is scored too; in-sample (the recipe) only the training list is
    val_list=snakemake.input.val if out_of_fold else None,
    out_val=snakemake.output.val if out_of_fold else None,
)
if not out_of_fold:
    write_split_list(snakemake.output.val, read_split_list(snakemake.input.val))  # val as it was
