rule infer_probs:
    input:
        model="results/{round}/train/{model}.pt",
        val=VAL_LIST,
        splits=expand("results/clean/{split}.txt", split=SPLITS),
    output:
        expand(
            "results/{{round}}/infer/{{model}}/{split}{ext}",
            split=["val"] + SPLITS,
            ext=[".npy", ".rows.txt", ".json"],
        ),
    log:
        "logs/{round}/infer/{model}.log",
    benchmark:
        "benchmarks/{round}/infer/{model}.tsv"
    conda:
        "../../envs/webfg.yaml"
    threads: lambda w: infer_threads(w.model)
    resources:
        gpu=lambda w: min(1, model_resources(w.model)["gpus"]),
        cpus_per_task=lambda w: model_resources(w.model)["cpus_per_task"],
        # one GPU's share of the node's memory; more on a retry (out-of-memory is the usual failure)
        mem_mb=lambda w, attempt: infer_mem_mb(w.model) * attempt,
    params:
        root=DATA_ROOT,
        splits=["val"] + SPLITS,
    script:
        "../scripts/infer_probs.py"


rule score_train:
    input:
        model="results/{round}/train/{model}.pt",
        val=VAL_LIST,
        splits=["results/clean/train.txt"],
    output:
        prediction_files("results/{round}/infer/{model}/train"),
    log:
        "logs/{round}/infer/{model}.train.log",
    benchmark:
        "benchmarks/{round}/infer/{model}.train.tsv"
    conda:
        "../../envs/webfg.yaml"
    threads: lambda w: infer_threads(w.model)
    resources:
        gpu=lambda w: min(1, model_resources(w.model)["gpus"]),
        cpus_per_task=lambda w: model_resources(w.model)["cpus_per_task"],
        # one GPU's share of the node's memory; more on a retry (out-of-memory is the usual failure)
        mem_mb=lambda w, attempt: infer_mem_mb(w.model) * attempt,
    params:
        root=DATA_ROOT,
        splits=["train"],
    script:
        "../scripts/infer_probs.py"
