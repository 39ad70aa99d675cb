from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from pathlib import Path

from webfg import plots
from webfg.io import log_to_stderr, read_split_list
from webfg.layout import parse_pseudo_tag
from webfg.stream import read_row_names

rule, out, w = snakemake.rule, snakemake.output[0], snakemake.wildcards
if rule == "plot_history":
    drawn = plots.plot_history(snakemake.input[0], out, f"{w.round} / {w.model}")
elif rule == "plot_val_accuracy":
    drawn = plots.plot_val_accuracy(snakemake.input, out)
elif rule == "plot_pseudo_yield":
    title = f"pseudo-labels on {w.split} from the {w.round} ensemble ({w.tag})"
    selected = (
        parse_pseudo_tag(w.tag)["scheme"],
        len(read_split_list(snakemake.input.selected)),
        len(read_row_names(Path(snakemake.input.rows))),
    )
    drawn = plots.plot_pseudo_yield(snakemake.input.yield_tsv, snakemake.params.threshold, out, title, selected)
elif rule == "plot_class_counts":
    drawn = plots.plot_class_counts(snakemake.input[0], out, snakemake.params.k)
elif rule == "plot_removals":
    drawn = plots.plot_removals(snakemake.input, out)
elif rule == "plot_round_accuracy":
    drawn = plots.plot_round_accuracy(snakemake.input[0], out)
else:
    raise ValueError(f"plot.py: no figure for rule {rule}")
log_to_stderr(f"{out}: {drawn}")
