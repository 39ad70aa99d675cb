from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import log_to_stderr
from webfg.pseudo import make_pseudo

make_pseudo(
    snakemake.input[0][: -len(".npy")],
    snakemake.output.pseudo,
    snakemake.output.yield_tsv,
    **snakemake.params.selection,
    log=log_to_stderr,
)
