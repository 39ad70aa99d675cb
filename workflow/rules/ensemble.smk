rule ensemble_probs:
    input:
        members=lambda w: round_predictions(w.round, w.split),
    output:
        prediction_files(L.ensemble("{round}", "{split}")),
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
        L.ensemble("{round}", "{split}", ".npy"),
    output:
        pseudo=L.pseudo("{round}", "{split}", "{tag}"),
        yield_tsv=L.pseudo_yield("{round}", "{split}", "{tag}"),
    log:
        "logs/{round}/pseudo/{split}@{tag}.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        # the selection is spelled in the file name (webfg.layout.pseudo_tag)
        selection=lambda w: parse_pseudo_tag(w.tag),
    script:
        "../scripts/make_pseudo.py"


for _round in ROUNDS:

    rule:
        name:
            f"round_{_round}"
        input:
            round_targets(_round),
        localrule: True
