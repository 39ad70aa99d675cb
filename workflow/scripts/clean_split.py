from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from pathlib import Path

from webfg.clean import clean_split
from webfg.io import log_to_stderr, write_json

p = snakemake.params
stats = clean_split(
    p.root,
    Path(snakemake.output.train).parent,  # writes the rule's outputs there by name (webfg.layout)
    num_classes=p.num_classes,
    val_fraction=p.val_fraction,
    val_min_per_class=p.val_min_per_class,
    seed=p.seed,
    meta_all=p.meta_all,
    test_splits=p.splits,
    log=log_to_stderr,
)
write_json(snakemake.output.stats, stats)
