from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

import numpy as np

from webfg.io import load_predictions, log_to_stderr, write_split_list, write_text
from webfg.postprocess import pseudo_labels, pseudo_yield

probs, relpaths, _ = load_predictions(snakemake.input[0])
pseudo = pseudo_labels(probs, relpaths, snakemake.params.threshold)
write_split_list(snakemake.output.pseudo, pseudo)
thresholds = np.round(np.arange(0.05, 1.0, 0.05), 2)
counts = pseudo_yield(probs, thresholds)
write_text(
    snakemake.output.yield_tsv,
    "threshold\tkept\tfraction\n"
    + "".join(f"{t:g}\t{c}\t{c / len(relpaths):.4f}\n" for t, c in zip(thresholds, counts)),
)
log_to_stderr(f"threshold {snakemake.params.threshold}: kept {len(pseudo)} of {len(relpaths)}")
