rule ensemble_probs:
    input:
        members=lambda w: round_predictions(w.round, w.split),
    output:
        prediction_files("results/{round}/ensemble/{split}"),
    log:
        "logs/{round}/ensemble/{split}.log",
    # post-processing streams the probability files (< 0.2 GiB, seconds when cached): no queue wait
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        power=0,  # a round's ensemble is the plain mean, as the recipe's pseudo-labelling
        power_key="rounds",
        dtype="float16",  # read only by the pseudo-label threshold
    script:
        "../scripts/ensemble_probs.py"


rule make_pseudo:
    input:
        "results/{round}/ensemble/{split}.npy",
    output:
        pseudo="results/{round}/pseudo/{split}@{threshold}.txt",
        yield_tsv="results/{round}/pseudo/{split}@{threshold}.yield.tsv",
    log:
        "logs/{round}/pseudo/{split}@{threshold}.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        threshold=lambda w: float(w.threshold),
    script:
        "../scripts/make_pseudo.py"


for _round in ROUNDS:

    rule:
        name:
            f"round_{_round}"
        input:
            round_targets(_round),
        localrule: True
