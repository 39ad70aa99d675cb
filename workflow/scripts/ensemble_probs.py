from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import load_predictions, log_to_stderr
from webfg.postprocess import ensemble_predictions, member_weights

stems = [p[: -len(".npy")] for p in snakemake.input]
accs = [load_predictions(s)[2].get("val_accuracy") for s in stems]
weights = member_weights(stems, accs, snakemake.params.power)
for stem, acc, w in zip(stems, accs, weights):
    log_to_stderr(f"{stem}: val accuracy {acc} weight {w:.4g}")
ensemble_predictions(stems, weights, snakemake.output[0][: -len(".npy")], meta={"power": snakemake.params.power})
