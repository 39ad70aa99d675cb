rule infer_probs:
    input:
        model=L.model("{round}", "{model}"),
        val=VAL_LIST,
        splits=[L.split_list(s) for s in SPLITS],
    output:
        [
            f
            for s in ["val"] + SPLITS
            for f in prediction_files(L.prediction("{round}", "{model}", s))
        ],
    log:
        L.job_log("{round}", "infer", "{model}"),
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
        with_val=True,  # <list stem>.npy for each input list, and val.npy
    script:
        "../scripts/infer_probs.py"


rule score_train:
    input:
        model=L.model("{round}", "{model}"),
        val=VAL_LIST,
        splits=[L.train_list],
    output:
        prediction_files(L.prediction("{round}", "{model}", "train")),
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
        with_val=False,
    script:
        "../scripts/infer_probs.py"
