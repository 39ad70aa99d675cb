from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.postprocess import read_labels, write_submission

relpaths, labels = read_labels(snakemake.input[0])
write_submission(snakemake.output.csv, snakemake.output.zip, relpaths, labels)
