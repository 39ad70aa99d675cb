from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import log_to_stderr
from webfg.legacy import import_legacy

meta = import_legacy(snakemake.input[0], snakemake.output[0][: -len(".npy")], snakemake.params.split)
log_to_stderr(f"{snakemake.input[0]}: accuracy from the name {meta['val_accuracy']}")
