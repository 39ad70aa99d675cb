rule clean_split:
    input:
        data_ready,  # a function: the data root (params) is read in place, not an input
    output:
        all=L.all_list,
        train=L.train_list,
        val=L.val_list,
        removed=report(
            L.removed,
            category="Cleaning",
            labels={"file": "removed.tsv"},
            caption="../report/removed.rst",
        ),
        stats=L.clean_stats,
        tests=[L.split_list(s) for s in SPLITS],
    log:
        "logs/clean/clean_split.log",
    benchmark:
        "benchmarks/clean/clean_split.tsv"
    conda:
        "../../envs/webfg.yaml"
    threads: config["clean"]["resources"]["cpus"]
    resources:
        cpus_per_task=config["clean"]["resources"]["cpus"],
        mem_mb=config["clean"]["resources"]["mem_mb"],
        runtime=config["clean"]["resources"]["runtime"],
    params:
        root=DATA_ROOT,
        num_classes=config["data"]["num_classes"],
        meta_all=config["data"]["meta_all"],
        splits=SPLITS,
        val_fraction=config["clean"]["val_fraction"],
        val_min_per_class=config["clean"]["val_min_per_class"],
        seed=config["clean"]["seed"],
    script:
        "../scripts/clean_split.py"


rule filter_noisy:
    input:
        train="results/clean/train.txt",
        val="results/clean/val.txt",
        scores=noise_scores(),
    output:
        train="results/clean/train_filtered.txt",
        # out of fold: val filtered too; in-sample (the recipe): val as it was
        val="results/clean/val_filtered.txt",
        removed="results/clean/noise_removed.tsv",
    log:
        "logs/clean/filter_noisy.log",
    benchmark:
        "benchmarks/clean/filter_noisy.tsv"
    # one pass over the scores: runs where Snakemake runs
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        method=NOISE["method"],
        max_label_prob=NOISE["max_label_prob"],
        min_top_prob=NOISE["min_top_prob"],
    script:
        "../scripts/filter_noisy.py"


rule noise_folds:
    input:
        train="results/clean/train.txt",
        val="results/clean/val.txt",
        stats="results/clean/stats.json",
    output:
        lists=expand(
            "results/clean/noise/fold{fold}.{part}.txt",
            fold=range(NOISE["folds"]),
            part=["train", "heldout"],
        ),
        folds="results/clean/noise/folds.tsv",
    log:
        "logs/clean/noise_folds.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        folds=NOISE["folds"],
        seed=config["clean"]["seed"],
    script:
        "../scripts/noise_folds.py"


rule train_fold_scorer:
    input:
        train="results/clean/noise/fold{fold}.train.txt",
        # the trainer's per-epoch val accuracy is the held-out fold's: the scorer's honest accuracy
        val="results/clean/noise/fold{fold}.heldout.txt",
        stats="results/clean/stats.json",
        pretrained=lambda w: MODELS[w.model].get("pretrained_file") or [],
    output:
        model="results/clean/noise/{model}/fold{fold}.pt",
        history="results/clean/noise/{model}/fold{fold}.history.tsv",
    log:
        "logs/clean/noise/{model}/fold{fold}.log",
    benchmark:
        "benchmarks/clean/noise/{model}/fold{fold}.tsv"
    conda:
        "../../envs/webfg.yaml"
    threads: lambda w: model_threads(w.model)
    # as train_model: the scorer is a models entry with its resources
    resources:
        gpu=lambda w: model_resources(w.model)["gpus"],
        nodes=lambda w: model_resources(w.model)["nodes"],
        tasks_per_node=lambda w: model_resources(w.model)["tasks_per_node"],
        mpi=lambda w: "srun" if model_resources(w.model)["tasks_per_node"] > 1 else "",
        cpus_per_task=lambda w: model_resources(w.model)["cpus_per_task"],
        mem_mb=lambda w: model_resources(w.model)["mem_mb"],
        runtime=lambda w, attempt: model_resources(w.model)["runtime"] * attempt,
    params:
        root=DATA_ROOT,
        model=lambda w: model_params(w.model),
        state_dir=lambda w: f"results/clean/noise/{w.model}/fold{w.fold}.state",
    script:
        "../scripts/train_model.py"


rule score_fold:
    input:
        model="results/clean/noise/{model}/fold{fold}.pt",
        heldout="results/clean/noise/fold{fold}.heldout.txt",
    output:
        prediction_files("results/clean/noise/{model}/fold{fold}.heldout"),
    log:
        "logs/clean/noise/{model}/fold{fold}.score.log",
    benchmark:
        "benchmarks/clean/noise/{model}/fold{fold}.score.tsv"
    conda:
        "../../envs/webfg.yaml"
    threads: lambda w: infer_threads(w.model)
    resources:
        gpu=lambda w: min(1, model_resources(w.model)["gpus"]),
        cpus_per_task=lambda w: model_resources(w.model)["cpus_per_task"],
        mem_mb=lambda w, attempt: infer_mem_mb(w.model) * attempt,
    params:
        root=DATA_ROOT,
    script:
        "../scripts/score_fold.py"


rule out_of_fold_scores:
    input:
        expand(
            "results/clean/noise/{model}/fold{fold}.heldout.npy",
            model=NOISE["scorer"] or [],
            fold=range(NOISE["folds"]),
        ),
    output:
        prediction_files("results/clean/noise/out_of_fold"),
    log:
        "logs/clean/out_of_fold_scores.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/out_of_fold_scores.py"


rule class_list:
    input:
        data_ready,
        # after clean_split has checked the whole tree: a tree it refuses leaves no class list
        L.clean_stats,
    output:
        L.classes,  # id -> class folder name, for the submission
    log:
        "logs/clean/class_list.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        root=DATA_ROOT,
        num_classes=config["data"]["num_classes"],
        meta_all=config["data"]["meta_all"],
    script:
        "../scripts/class_list.py"
