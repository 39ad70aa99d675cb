from webfg.io import rule_script

rule_script(snakemake)  # stderr to the log; input errors end the job with one line

from webfg.io import log_to_stderr
from webfg.postprocess import (
    POWER_GRID,
    choose_power,
    ensemble_predictions,
    member_accuracies,
    member_weights,
    parse_power,
    write_power_choice,
)

key = snakemake.params.power_key
stems = [p[: -len(".npy")] for p in snakemake.input.members]
accs = member_accuracies(stems)
power = parse_power(snakemake.params.power, key)
table = None
if hasattr(snakemake.input, "val"):
    grid = sorted(set(POWER_GRID) | ({power} if power != "auto" else set()))
    val_stems = [p[: -len(".npy")] for p in snakemake.input.val]
    best, table = choose_power(val_stems, snakemake.input.val_list, accs, grid, key=key, accuracy_from=stems)
    log_to_stderr(f"{key}: val accuracy " + ", ".join(f"power {p:g}: {a:.4f}" for p, a in table))
    if power == "auto":
        power = best
        log_to_stderr(f"{key}: auto -> {power:g}, the best on val")
weights = member_weights(stems, accs, power)
for stem, acc, w in zip(stems, accs, weights):
    log_to_stderr(f"{stem}: val accuracy {acc} weight {w:.4g}")
meta = {"power": power, **({"power_grid": [list(r) for r in table]} if table else {})}
out = snakemake.output[0][: -len(".npy")]
ensemble_predictions(stems, weights, out, meta=meta, dtype=snakemake.params.dtype)
if table:
    write_power_choice(snakemake.output.power, table, power)
