"""Build the embedded demo dataset into the data root (webfg.demo)."""
import sys

sys.stderr = open(snakemake.log[0], "w")

from webfg.demo import PRESETS, build_demo

info = build_demo(snakemake.params.root, PRESETS[snakemake.params.preset], snakemake.params.seed)
print(f"{snakemake.params.root}: {info['counts']}", file=sys.stderr)
