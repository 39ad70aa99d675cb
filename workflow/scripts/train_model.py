import sys

sys.stderr = open(snakemake.log[0], "w")

from webfg.config import ModelConfig
from webfg.io import log_to_stderr, read_json
from webfg.train import train

cfg = ModelConfig.from_dict(snakemake.params.model, where=f"models.{snakemake.wildcards.model}")
train(
    cfg,
    snakemake.params.root,
    snakemake.input.train,
    snakemake.input.val,
    read_json(snakemake.input.stats)["num_classes"],
    snakemake.output.model,
    state_dir=snakemake.params.state_dir,
    threads=snakemake.threads,
    log=log_to_stderr,
)
