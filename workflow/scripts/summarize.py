import sys

sys.stderr = open(snakemake.log[0], "w")

from webfg.summary import summarize

p = snakemake.params
summary = summarize(
    "results", p.rounds, p.splits, p.final, p.answers, p.noise_filter, snakemake.output.tsv, snakemake.output.json
)
print(open(snakemake.output.tsv).read(), file=sys.stderr)
