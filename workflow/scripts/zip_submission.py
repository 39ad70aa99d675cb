import sys

sys.stderr = open(snakemake.log[0], "w")

from webfg.postprocess import read_labels, write_submission

relpaths, labels = read_labels(snakemake.input[0])
write_submission(snakemake.output.csv, snakemake.output.zip, relpaths, labels)
