rule final_ensemble:
    input:
        members=[
            L.prediction(r, m, FINAL["split"], ".npy") for r, m in FINAL["members"]
        ],
        val=[L.prediction(r, m, "val", ".npy") for r, m in FINAL["members"]],
        val_list=VAL_LIST,
    output:
        prediction_files(L.final_ensemble),
        power=L.final_power,
    log:
        "logs/final/ensemble.log",
    benchmark:
        "benchmarks/final/ensemble.tsv"
    # post-processing streams the probability files (< 0.2 GiB, seconds when cached): no queue wait
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        power=FINAL["power"],
        power_key="final.power",
        dtype="float32",  # no top-2 ties made by rounding
    script:
        "../scripts/ensemble_probs.py"


rule redistribute:
    input:
        ensemble=f"{L.final_ensemble}.npy",
        train_list=L.train_list,  # map: the training prior it corrects
    output:
        labels=L.final_labels,
        counts=report(
            L.class_counts,
            category="Submission",
            labels={"file": "class counts before/after redistribution"},
            caption="../report/class_counts.rst",
        ),
    log:
        "logs/final/redistribute.log",
    benchmark:
        "benchmarks/final/redistribute.tsv"
    # < 0.3 GiB, seconds to ~30 s at full scale: runs where Snakemake runs
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        config=FINAL["redistribute"],
        key_prefix="final.redistribute.",
    script:
        "../scripts/redistribute.py"


rule zip_submission:
    input:
        L.final_labels,
    output:
        csv=L.submit_csv,
        zip=L.submit_zip,
    log:
        "logs/final/zip_submission.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/zip_submission.py"
