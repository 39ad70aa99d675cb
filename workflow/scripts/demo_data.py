"""Build the embedded demo dataset into the data root (webfg.demo)."""

import sys

from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.demo import PRESETS, build_demo

info = build_demo(snakemake.params.root, PRESETS[snakemake.params.preset], snakemake.params.seed)
print(f"{snakemake.params.root}: {info['counts']}", file=sys.stderr)
