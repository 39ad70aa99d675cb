rule pretrain_mae:
    """Optional first stage: MAE pre-training of a ViT encoder on the cleaned training
    images (labels unused) plus unlabelled test splits. A model starts from it with
    `pretrained_file: results/pretrain/<name>.pth`, which orders the DAG."""
    input:
        train=L.train_list,
        unlabelled=lambda w: [L.split_list(s) for s in PRETRAIN[w.name]["splits"]],
    output:
        encoder=L.pretrain("{name}"),
        history=str(history_of(L.pretrain("{name}"))),
    log:
        "logs/pretrain/{name}.log",
    benchmark:
        "benchmarks/pretrain/{name}.tsv"
    wildcard_constraints:
        name="|".join(PRETRAIN) or "(?!)",
    conda:
        "../../envs/webfg.yaml"
    threads: lambda w: pretrain_threads(w.name)
    # as train_model: one process per GPU (srun / torchrun), its own GPU slots on one machine
    resources:
        gpu=lambda w: pretrain_resources(w.name)["gpus"],
        nodes=lambda w: pretrain_resources(w.name)["nodes"],
        tasks_per_node=lambda w: pretrain_resources(w.name)["tasks_per_node"],
        mpi=lambda w: "srun" if pretrain_resources(w.name)["tasks_per_node"] > 1 else "",
        cpus_per_task=lambda w: pretrain_resources(w.name)["cpus_per_task"],
        mem_mb=lambda w: pretrain_resources(w.name)["mem_mb"],
        runtime=lambda w, attempt: pretrain_resources(w.name)["runtime"] * attempt,
    params:
        root=DATA_ROOT,
        mae=lambda w: pretrain_params(w.name),
        # resumable state: outside the declared outputs, which Snakemake deletes first
        state_dir=lambda w: str(state_dir_of(L.pretrain(w.name))),
    script:
        "../scripts/pretrain_mae.py"
