from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.config import MAEConfig
from webfg.io import log_to_stderr
from webfg.mae import pretrain

cfg = MAEConfig.from_dict(snakemake.params.mae, where=f"pretrain.{snakemake.wildcards.name}")
pretrain(
    cfg,
    snakemake.params.root,
    snakemake.input.train,
    snakemake.input.unlabelled,
    snakemake.output.encoder,
    state_dir=snakemake.params.state_dir,
    threads=snakemake.threads,
    log=log_to_stderr,
)
