rule pretrain_mae:
    """Optional first stage: MAE pre-training of a ViT encoder on the cleaned training
    images (labels unused) plus unlabelled test splits. A model starts from it with
    `pretrained_file: results/pretrain/<name>.pth`, which orders the DAG."""
    input:
        train="results/clean/train.txt",
        unlabelled=lambda w: expand(
            "results/clean/{split}.txt", split=PRETRAIN[w.name]["splits"]
        ),
    output:
        encoder="results/pretrain/{name}.pth",
        history="results/pretrain/{name}.history.tsv",
    log:
        "logs/pretrain/{name}.log",
    benchmark:
        "benchmarks/pretrain/{name}.tsv"
    wildcard_constraints:
        name="|".join(PRETRAIN) or "(?!)",
    conda:
        "../../envs/webfg.yaml"
    threads: workflow.cores
    resources:
        gpu=lambda w: entry_resources(PRETRAIN[w.name])["gpus"],
        mem_mb=lambda w: entry_resources(PRETRAIN[w.name])["mem_mb"],
        runtime=lambda w: entry_resources(PRETRAIN[w.name])["runtime"],
    params:
        root=DATA_ROOT,
        mae=lambda w: pretrain_params(w.name),
        # resumable state: outside the declared outputs, which Snakemake deletes first
        state_dir=lambda w: f"results/pretrain/{w.name}.state",
    script:
        "../scripts/pretrain_mae.py"
