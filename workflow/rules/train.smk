rule merge_meta:
    input:
        base=lambda w: train_list_of_round(w.round),
        pseudo=lambda w: pseudo_lists(w.round),
    output:
        "results/{round}/meta/train.txt",
    log:
        "logs/{round}/meta/merge_meta.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/merge_meta.py"


rule train_model:
    input:
        train="results/{round}/meta/train.txt",
        val="results/clean/val.txt",
        stats="results/clean/stats.json",
        pretrained=lambda w: MODELS[w.model].get("pretrained_file") or [],
    output:
        model="results/{round}/train/{model}.pt",
        history=report(
            "results/{round}/train/{model}.history.tsv",
            category="Training",
            subcategory="{round}",
            labels={"round": "{round}", "model": "{model}"},
            caption="../report/history.rst",
        ),
    log:
        "logs/{round}/train/{model}.log",
    benchmark:
        "benchmarks/{round}/train/{model}.tsv"
    params:
        root=DATA_ROOT,
        model=lambda w: model_params(w.model),
        # resumable state: outside the declared outputs, which Snakemake deletes first
        state_dir=lambda w: f"results/{w.round}/train/{w.model}.state",
    threads: workflow.cores
    resources:
        gpu=lambda w: model_resources(w.model)["gpus"],
        mem_mb=lambda w: model_resources(w.model)["mem_mb"],
        runtime=lambda w: model_resources(w.model)["runtime"],
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/train_model.py"
