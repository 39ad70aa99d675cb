rule merge_meta:
    input:
        base=lambda w: train_list_of_round(w.round),
        pseudo=lambda w: pseudo_lists(w.round),
    output:
        L.meta_train("{round}"),
    log:
        "logs/{round}/meta/merge_meta.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/merge_meta.py"


rule train_model:
    input:
        train=L.meta_train("{round}"),
        val=VAL_LIST,
        stats=L.clean_stats,
        pretrained=lambda w: MODELS[w.model].get("pretrained_file") or [],
    output:
        model=L.model("{round}", "{model}"),
        history=report(
            L.history("{round}", "{model}"),
            category="Training",
            subcategory="{round}",
            labels={"round": "{round}", "model": "{model}"},
            caption="../report/history.rst",
        ),
    log:
        L.job_log("{round}", "train", "{model}"),  # webfg status reads the progress there
    benchmark:
        "benchmarks/{round}/train/{model}.tsv"
    conda:
        "../../envs/webfg.yaml"
    threads: lambda w: model_threads(w.model)
    # models.<name>.resources -> the Slurm request (profiles/slurm) or the local --resources
    # gpu=N budget. One process per GPU: gpus over nodes, tasks_per_node per node, each with
    # cpus_per_task CPUs; scripts/train_model.py starts them (srun / torchrun / in-process).
    # `mpi` present = the jobstep runs the script in the batch shell (no `srun -n1` wrapper),
    # so the trainer is the srun task that Slurm's --signal and requeue reach; it is empty
    # (the plugin adds no MPI task flags) for one process per node.
    # A retry gets more time: training resumes from its checkpoint, so extra time finishes it.
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
        # resumable state: outside the declared outputs, which Snakemake deletes first
        state_dir=lambda w: L.state_dir(w.round, w.model),
    script:
        "../scripts/train_model.py"
