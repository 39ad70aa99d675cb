import os

from snakemake.utils import validate

from webfg.cluster import (
    SINFO_FORMAT,
    ResourceError,
    check_cpu_job,
    check_fits,
    check_local_gpus,
    check_workers,
    job_geometry,
    job_threads,
    parse_sinfo,
)
from webfg.config import MAEConfig, ModelConfig, check_arch, check_pretrain_matches
from webfg.gpuslots import machine_gpus
from webfg.layout import (
    PSEUDO_TAG,
    Layout,
    history_of,
    parse_pseudo_tag,
    prediction_files,
    pseudo_settings,
    pseudo_sources,
    state_dir_of,
)
from webfg.pseudo import check_scheme
from webfg.summary import summary_inputs

validate(config, schema="../schemas/config.schema.yaml")

DATA_ROOT = config["data"]["root"]
SPLITS = config["data"]["test_splits"]
MODELS = config["models"]
ROUNDS = list(config["rounds"])
NOISE = config["clean"]["noise_filter"]
FINAL = config["final"]
ANSWERS = config["data"]["answers"]
PRETRAIN = config["pretrain"]
# every path of the results layout (webfg.layout: the package reads results back with it)
L = Layout()
OUT_OF_FOLD = NOISE["enabled"] and NOISE["method"] == "out_of_fold"
# out of fold, val is scored and filtered too, and every round uses the filtered list
VAL_LIST = L.val_filtered if OUT_OF_FOLD else L.val_list
# timm's model list, kept per timm version (check_archs)
ARCH_CACHE_DIR = os.environ.get("WEBFG_CACHE_DIR") or ".snakemake/webfg"


def check_config():
    """Cross-references the schema cannot express; each error names the key."""
    for name, entry in MODELS.items():
        try:
            ModelConfig.from_dict(model_params(name), where=f"models.{name}")
        except ValueError as e:
            raise ConfigError(f"config: {e}") from None
        try:
            check_workers(
                entry.get("num_workers"), model_resources(name), f"models.{name}"
            )
        except ResourceError as e:
            raise ConfigError(f"config {e}") from None
        check_pretrained_file(name)
    check_archs()
    for name in PRETRAIN:
        try:
            MAEConfig.from_dict(pretrain_params(name), where=f"pretrain.{name}")
            check_workers(
                PRETRAIN[name].get("num_workers"),
                pretrain_resources(name),
                f"pretrain.{name}",
            )
        except ResourceError as e:
            raise ConfigError(f"config {e}") from None
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config: {e}") from None
        for s in PRETRAIN[name]["splits"]:
            if s not in SPLITS:
                raise ConfigError(
                    f"config pretrain.{name}.splits: {s!r} is not in data.test_splits {SPLITS}"
                )
    for i, (name, rnd) in enumerate(config["rounds"].items()):
        for m in rnd["models"]:
            if m not in MODELS:
                raise ConfigError(
                    f"config rounds.{name}.models: {m!r} is not a key of models ({sorted(MODELS)})"
                )
        pseudo = rnd.get("pseudo")
        if pseudo:
            if pseudo["from"] not in ROUNDS[:i]:
                raise ConfigError(
                    f"config rounds.{name}.pseudo.from: {pseudo['from']!r} must be an earlier round, one of {ROUNDS[:i]}"
                )
            for s in pseudo["splits"]:
                if s not in SPLITS:
                    raise ConfigError(
                        f"config rounds.{name}.pseudo.splits: {s!r} is not in data.test_splits {SPLITS}"
                    )
            try:
                check_scheme(**pseudo_settings(pseudo), where=f"rounds.{name}.pseudo")
            except ValueError as e:
                raise ConfigError(f"config {e}") from None
    if NOISE["enabled"] and NOISE["method"] == "out_of_fold":
        if NOISE["scorer"] not in MODELS:
            raise ConfigError(
                f"config clean.noise_filter.scorer: {NOISE['scorer']!r} is not a key of models "
                f"({sorted(MODELS)}); out-of-fold scoring trains that model on each fold"
            )
    elif NOISE["enabled"]:
        if NOISE["round"] not in ROUNDS:
            raise ConfigError(
                f"config clean.noise_filter.round: {NOISE['round']!r} is not a round ({ROUNDS})"
            )
        if config["rounds"][NOISE["round"]].get("pseudo"):
            raise ConfigError(
                f"config clean.noise_filter.round: round {NOISE['round']!r} must train without pseudo-labels"
            )
    for r, m in FINAL["members"]:
        if r not in ROUNDS or m not in config["rounds"][r]["models"]:
            raise ConfigError(
                f"config final.members: [{r}, {m}] is not a model trained in a round"
            )
    if FINAL["split"] not in SPLITS:
        raise ConfigError(
            f"config final.split: {FINAL['split']!r} is not in data.test_splits {SPLITS}"
        )


def check_archs():
    """Every timm architecture exists (in the main process only: jobs re-parse the workflow).
    timm's model list is cached per timm version (listing it imports torch, 5-10 s) under
    .snakemake/webfg, or under $WEBFG_CACHE_DIR when set (the tests share one across runs).
    """
    if not workflow.is_main_process:
        return
    entries = [(f"models.{n}", e) for n, e in MODELS.items()]
    entries += [(f"pretrain.{n}", e) for n, e in PRETRAIN.items()]
    for where, entry in entries:
        try:
            check_arch(entry["arch"], where, cache_dir=ARCH_CACHE_DIR)
        except ValueError as e:
            raise ConfigError(f"config {e}") from None


def model_params(model):
    """The ModelConfig fields of a model entry (resources stripped)."""
    return {k: v for k, v in MODELS[model].items() if k != "resources"}


def model_resources(model):
    """models.<name>.resources with defaults, plus the job geometry (webfg.cluster.job_geometry)."""
    return job_geometry(MODELS[model].get("resources", {}), f"models.{model}.resources")


def pretrain_resources(name):
    """pretrain.<name>.resources with defaults, plus the job geometry (as a model's)."""
    return job_geometry(
        PRETRAIN[name].get("resources", {}), f"pretrain.{name}.resources"
    )


def model_threads(model):
    """A training job's threads: its CPUs per GPU x GPUs on the node (a CPU-only job: cpus_per_gpu), at most --cores."""
    return job_threads(model_resources(model), workflow.cores)


def infer_threads(model):
    """Inference uses one GPU: one GPU's CPUs (a CPU-only model: cpus_per_gpu), at most --cores."""
    r = model_resources(model)
    return job_threads({**r, "tasks_per_node": 1}, workflow.cores)


def pretrain_threads(name):
    return job_threads(pretrain_resources(name), workflow.cores)


def pretrain_params(name):
    """The MAEConfig fields of a pretrain entry (splits and resources stripped)."""
    return {k: v for k, v in PRETRAIN[name].items() if k not in ("splits", "resources")}


def check_pretrained_file(model):
    """A model starting from results/pretrain/<name>.pth needs that entry, with its arch."""
    path = MODELS[model].get("pretrained_file") or ""
    prefix = L.pretrain("")[: -len(".pth")]  # results/pretrain/
    if not path.startswith(prefix):
        return
    name = path.removeprefix(prefix).removesuffix(".pth")
    if name not in PRETRAIN or path != L.pretrain(name):
        raise ConfigError(
            f"config models.{model}.pretrained_file: {path!r} is made by no pretrain entry "
            f"(pretrain: {sorted(PRETRAIN)}; expected results/pretrain/<name>.pth)"
        )
    try:
        check_pretrain_matches(
            ModelConfig.from_dict(model_params(model)),
            MAEConfig.from_dict(pretrain_params(name)),
            f"models.{model}",
            f"pretrain.{name}",
        )
    except ValueError as e:
        raise ConfigError(f"config {e}") from None


def infer_mem_mb(model):
    r = model_resources(model)
    return max(1000, r["mem_mb"] // r["tasks_per_node"])


onstart:
    # Slurm only (not in dry runs, nor inside a job): refuse before the first sbatch what
    # Slurm would reject or pend forever, naming the model and the key to change
    if getattr(workflow.executor_plugin, "name", None) == "slurm":
        check_slurm_requests()
    else:
        check_gpus_of_this_machine()


def check_gpus_of_this_machine():
    """Outside Slurm, a GPU request on a machine without (enough) GPUs waits forever or
    trains on the CPU: refuse it before any job starts (the CPU demo says gpus: 0)."""
    requests = {
        f"models.{m}.resources.gpus": model_resources(m)["tasks_per_node"]
        for m in trained_models()
        if model_resources(m)["gpus"]
    }
    requests.update(
        {
            f"pretrain.{n}.resources.gpus": pretrain_resources(n)["tasks_per_node"]
            for n in PRETRAIN
            if pretrain_resources(n)["gpus"]
        }
    )
    try:
        check_local_gpus(requests, machine_gpus())
    except ResourceError as e:
        raise ConfigError(f"config {e}") from None


def trained_models():
    """Every models entry a job trains: the rounds' models and the out-of-fold noise scorer."""
    names = [m for rnd in ROUNDS for m in config["rounds"][rnd]["models"]]
    return list(dict.fromkeys(names + ([NOISE["scorer"]] if OUT_OF_FOLD else [])))


def check_slurm_requests():
    import shutil
    import subprocess

    if shutil.which("sbatch") is None:
        raise ConfigError(
            "profiles/slurm submits with sbatch, which is not on PATH: run Snakemake on a Slurm "
            "login node (or load the Slurm module), or use --profile profiles/local or "
            "profiles/workstation on one machine"
        )
    sinfo = subprocess.run(
        ["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True
    )
    if sinfo.returncode:
        raise ConfigError(f"sinfo failed: {sinfo.stderr.strip()}")
    partitions = parse_sinfo(sinfo.stdout)
    partition = os.environ.get("WEBFG_SLURM_GPU_PARTITION", "")
    clean = config["clean"]["resources"]
    try:
        for m in trained_models():
            check_fits(m, model_resources(m), partitions, partition)
        check_cpu_job(
            "clean.resources",
            clean["cpus"],
            clean["mem_mb"],
            partitions,
            os.environ.get("WEBFG_SLURM_CPU_PARTITION", ""),
        )
    except ResourceError as e:
        raise ConfigError(f"config {e}") from None


check_config()


wildcard_constraints:
    round="|".join(ROUNDS),
    model="|".join(MODELS),
    split="|".join(["val", "train"] + SPLITS),
    tag=PSEUDO_TAG,
    fold=r"[0-9]+",


def data_ready(wildcards=None):
    """The demo rule's marker when the demo is built by the workflow; nothing otherwise."""
    return (
        [os.path.join(DATA_ROOT, "answers", "spec.json")]
        if config["demo"]["build"]
        else []
    )


def train_list_of_round(rnd):
    """Rounds after the noise-filter round train on the filtered list; out of fold, every
    round does (the scores come from no round)."""
    if NOISE["enabled"] and (OUT_OF_FOLD or rnd != NOISE["round"]):
        return L.train_filtered
    return L.train_list


def noise_scores():
    """What the noise filter reads: the out-of-fold scorers' prediction of train + val, or
    (in-sample, the recipe) the noise round's ensemble on the training list."""
    if OUT_OF_FOLD:
        return "results/clean/noise/out_of_fold.npy"
    return f"results/{NOISE['round']}/ensemble/train.npy"


def pseudo_lists(rnd):
    return [L.pseudo(*source) for source in pseudo_sources(config["rounds"][rnd])]


def round_predictions(rnd, split):
    return [
        L.prediction(rnd, m, split, ".npy") for m in config["rounds"][rnd]["models"]
    ]


def round_targets(rnd):
    return [L.ensemble(rnd, s, ".npy") for s in SPLITS]


def all_targets():
    targets = [L.submit_zip, L.classes]
    if ANSWERS:
        targets.append(L.summary_tsv)
    return targets + plot_targets()


def plot_targets():
    """Every figure the report shows for this config."""
    targets = [
        L.plot_history(r, m) for r in ROUNDS for m in config["rounds"][r]["models"]
    ]
    targets += [L.plot("val_accuracy"), L.plot("removals"), L.plot("class_counts")]
    for r in ROUNDS:
        targets += [
            L.plot_pseudo(*source) for source in pseudo_sources(config["rounds"][r])
        ]
    if ANSWERS:
        targets.append(L.plot("round_accuracy"))
    return list(dict.fromkeys(targets))
