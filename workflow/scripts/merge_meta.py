from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import log_to_stderr, read_split_list, write_split_list
from webfg.postprocess import merge_meta

base = read_split_list(snakemake.input.base)
extra = [read_split_list(p) for p in snakemake.input.pseudo]
merged = merge_meta(base, *extra)
write_split_list(snakemake.output[0], merged)
log_to_stderr(f"{len(base)} cleaned + {sum(map(len, extra))} pseudo-labelled = {len(merged)} samples")
