rule final_ensemble:
    input:
        members=[
            f"results/{r}/infer/{m}/{FINAL['split']}.npy" for r, m in FINAL["members"]
        ],
        val=[f"results/{r}/infer/{m}/val.npy" for r, m in FINAL["members"]],
        val_list=VAL_LIST,
    output:
        prediction_files("results/final/ensemble"),
        power="results/final/power.tsv",
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
        ensemble="results/final/ensemble.npy",
        train_list="results/clean/train.txt",  # map: the training prior it corrects
    output:
        labels="results/final/labels.tsv",
        counts=report(
            "results/final/class_counts.tsv",
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
        "results/final/labels.tsv",
    output:
        csv="results/submit.csv",
        zip="results/submit.zip",
    log:
        "logs/final/zip_submission.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/zip_submission.py"
