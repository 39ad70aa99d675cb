import sys

from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.layout import Layout
from webfg.summary import summarize

p = snakemake.params
summarize(
    Layout(p.results),
    p.rounds,
    p.splits,
    p.final,
    p.answers,
    p.noise_filter,
    snakemake.output.tsv,
    snakemake.output.json,
)
print(open(snakemake.output.tsv).read(), file=sys.stderr)
