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
        scores=f"results/{NOISE['round']}/ensemble/train.npy",
    output:
        train="results/clean/train_filtered.txt",
        removed="results/clean/noise_removed.tsv",
    log:
        "logs/clean/filter_noisy.log",
    benchmark:
        "benchmarks/clean/filter_noisy.tsv"
    # one pass over the ensemble's train scores: runs where Snakemake runs
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        max_label_prob=NOISE["max_label_prob"],
        min_top_prob=NOISE["min_top_prob"],
    script:
        "../scripts/filter_noisy.py"


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
