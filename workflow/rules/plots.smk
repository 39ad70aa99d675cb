# The report's figures (snakemake --report): thin rules over webfg.plots, all cheap.
# Their targets: plot_targets() in common.smk.


rule plot_history:
    input:
        L.history("{round}", "{model}"),
    output:
        report(
            L.plot_history("{round}", "{model}"),
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
            L.prediction(r, m, "val", ".json")
            for r in ROUNDS
            for m in config["rounds"][r]["models"]
        ],
    output:
        report(
            L.plot("val_accuracy"),
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
        yield_tsv=L.pseudo_yield("{round}", "{split}", "{tag}"),
        # what the scheme kept, out of how many images
        selected=L.pseudo("{round}", "{split}", "{tag}"),
        rows=L.ensemble("{round}", "{split}", ".rows.txt"),
    output:
        report(
            L.plot_pseudo("{round}", "{split}", "{tag}"),
            caption="../report/plot_pseudo_yield.rst",
            category="Pseudo-labels",
            subcategory="made by {round}",
            labels={
                "made by": "{round}",
                "split": "{split}",
                "selection": "{tag}",
            },
        ),
    log:
        "logs/{round}/plots/pseudo_{split}@{tag}.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        # the marked bar: the fixed/adaptive threshold, or the balanced quota's floor
        threshold=lambda w: parse_pseudo_tag(w.tag).get(
            "threshold", parse_pseudo_tag(w.tag).get("min_threshold")
        ),
    script:
        "../scripts/plot.py"


rule plot_class_counts:
    input:
        L.class_counts,
    output:
        report(
            L.plot("class_counts"),
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
        [L.removed] + ([L.noise_removed] if NOISE["enabled"] else []),
    output:
        report(
            L.plot("removals"),
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
        L.summary_tsv,
    output:
        report(
            L.plot("round_accuracy"),
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
