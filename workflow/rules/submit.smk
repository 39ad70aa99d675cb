rule final_ensemble:
    input:
        [f"results/{r}/infer/{m}/{FINAL['split']}.npy" for r, m in FINAL["members"]],
    output:
        prediction_files("results/final/ensemble"),
    log:
        "logs/final/ensemble.log",
    benchmark:
        "benchmarks/final/ensemble.tsv"
    # post-processing streams the probability files (<= 0.7 GiB, ~40 s at full scale): no queue wait
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        power=FINAL["power"],
    script:
        "../scripts/ensemble_probs.py"


rule redistribute:
    input:
        "results/final/ensemble.npy",
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
    # 0.3 GiB, ~30 s at full scale: runs where Snakemake runs
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        method=FINAL["redistribute"]["method"],
        k=FINAL["redistribute"]["k"],
        strength=FINAL["redistribute"]["strength"],
        temperature=FINAL["redistribute"]["temperature"],
        candidates=FINAL["redistribute"]["candidates"],
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
