# The report's figures (snakemake --report): thin rules over webfg.plots, all cheap.
# Their targets: plot_targets() in common.smk.


rule plot_history:
    input:
        "results/{round}/train/{model}.history.tsv",
    output:
        report(
            "results/plots/{round}/{model}.history.png",
            caption="../report/plot_history.rst",
            category="Training curves",
            subcategory="{round}",
            labels={"round": "{round}", "model": "{model}"},
        ),
    log:
        "logs/{round}/plots/{model}.history.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/plot.py"


rule plot_val_accuracy:
    input:
        [
            f"results/{r}/infer/{m}/val.json"
            for r in ROUNDS
            for m in config["rounds"][r]["models"]
        ],
    output:
        report(
            "results/plots/val_accuracy.png",
            caption="../report/plot_val_accuracy.rst",
            category="Validation accuracy",
            labels={"figure": "val accuracy per round and model"},
        ),
    log:
        "logs/plots/val_accuracy.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/plot.py"


rule plot_pseudo_yield:
    input:
        "results/{round}/pseudo/{split}@{threshold}.yield.tsv",
    output:
        report(
            "results/plots/{round}/pseudo_{split}@{threshold}.png",
            caption="../report/plot_pseudo_yield.rst",
            category="Pseudo-labels",
            subcategory="made by {round}",
            labels={
                "made by": "{round}",
                "split": "{split}",
                "threshold": "{threshold}",
            },
        ),
    log:
        "logs/{round}/plots/pseudo_{split}@{threshold}.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        threshold=lambda w: float(w.threshold),
    script:
        "../scripts/plot.py"


rule plot_class_counts:
    input:
        "results/final/class_counts.tsv",
    output:
        report(
            "results/plots/class_counts.png",
            caption="../report/plot_class_counts.rst",
            category="Submission",
            labels={"file": "class-count histogram"},
        ),
    log:
        "logs/plots/class_counts.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        k=(
            FINAL["redistribute"]["k"]
            if FINAL["redistribute"]["method"] != "none"
            else None
        ),
    script:
        "../scripts/plot.py"


rule plot_removals:
    input:
        ["results/clean/removed.tsv"]
        + (["results/clean/noise_removed.tsv"] if NOISE["enabled"] else []),
    output:
        report(
            "results/plots/removals.png",
            caption="../report/plot_removals.rst",
            category="Cleaning",
            labels={"file": "removals by reason"},
        ),
    log:
        "logs/plots/removals.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/plot.py"


rule plot_round_accuracy:
    input:
        "results/summary.tsv",
    output:
        report(
            "results/plots/round_accuracy.png",
            caption="../report/plot_round_accuracy.rst",
            category="Summary",
            labels={"file": "accuracy per round"},
        ),
    log:
        "logs/plots/round_accuracy.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/plot.py"
