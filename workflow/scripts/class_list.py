from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.clean import write_class_list
from webfg.io import log_to_stderr

p = snakemake.params
names = write_class_list(p.root, snakemake.output[0], p.num_classes, p.meta_all)
log_to_stderr(f"{len(names)} classes: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}")
