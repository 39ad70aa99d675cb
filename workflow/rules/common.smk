import os

from snakemake.utils import validate

from webfg.cluster import ResourceError, check_fits, job_geometry, parse_sinfo
from webfg.config import MAEConfig, ModelConfig, check_arch

validate(config, schema="../schemas/config.schema.yaml")

DATA_ROOT = config["data"]["root"]
SPLITS = config["data"]["test_splits"]
MODELS = config["models"]
ROUNDS = list(config["rounds"])
NOISE = config["clean"]["noise_filter"]
FINAL = config["final"]
ANSWERS = config["data"]["answers"]
PRETRAIN = config["pretrain"]


def check_config():
    """Cross-references the schema cannot express; each error names the key."""
    for name, entry in MODELS.items():
        try:
            ModelConfig.from_dict(model_params(name), where=f"models.{name}")
        except ValueError as e:
            raise ConfigError(f"config: {e}") from None
        try:
            model_resources(name)
        except ResourceError as e:
            raise ConfigError(f"config {e}") from None
        check_pretrained_file(name)
    check_archs()
    for name in PRETRAIN:
        try:
            MAEConfig.from_dict(pretrain_params(name), where=f"pretrain.{name}")
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
    if NOISE["enabled"]:
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
    timm's model list is cached under .snakemake/ per timm version (listing it imports torch).
    """
    if not workflow.is_main_process:
        return
    entries = [(f"models.{n}", e) for n, e in MODELS.items()]
    entries += [(f"pretrain.{n}", e) for n, e in PRETRAIN.items()]
    for where, entry in entries:
        try:
            check_arch(entry["arch"], where, cache_dir=".snakemake/webfg")
        except ValueError as e:
            raise ConfigError(f"config {e}") from None


def model_params(model):
    """The ModelConfig fields of a model entry (resources stripped)."""
    return {k: v for k, v in MODELS[model].items() if k != "resources"}


def model_resources(model):
    """models.<name>.resources with defaults, plus the job geometry (webfg.cluster.job_geometry)."""
    return job_geometry(MODELS[model].get("resources", {}), f"models.{model}.resources")


def entry_resources(entry):
    """A model's or pretrain entry's executor resources, defaults filled in."""
    return {"gpus": 0, "mem_mb": 4000, "runtime": 120, **entry.get("resources", {})}


def pretrain_params(name):
    """The MAEConfig fields of a pretrain entry (splits and resources stripped)."""
    return {k: v for k, v in PRETRAIN[name].items() if k not in ("splits", "resources")}


def check_pretrained_file(model):
    """A model starting from results/pretrain/<name>.pth needs that entry, with its arch."""
    path = MODELS[model].get("pretrained_file") or ""
    if not path.startswith("results/pretrain/"):
        return
    name = path.removeprefix("results/pretrain/").removesuffix(".pth")
    if name not in PRETRAIN or path != f"results/pretrain/{name}.pth":
        raise ConfigError(
            f"config models.{model}.pretrained_file: {path!r} is made by no pretrain entry "
            f"(pretrain: {sorted(PRETRAIN)}; expected results/pretrain/<name>.pth)"
        )
    if PRETRAIN[name]["arch"] != MODELS[model]["arch"]:
        raise ConfigError(
            f"config models.{model}.arch: {MODELS[model]['arch']!r} is not the arch "
            f"{PRETRAIN[name]['arch']!r} of pretrain.{name}, its pretrained_file"
        )


def infer_mem_mb(model):
    r = model_resources(model)
    return max(1000, r["mem_mb"] // r["tasks_per_node"])


onstart:
    # Slurm only (not in dry runs, nor inside a job): refuse before the first sbatch what
    # Slurm would reject or pend forever, naming the model and the key to change
    if getattr(workflow.executor_plugin, "name", None) == "slurm":
        check_slurm_requests()


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
        ["sinfo", "-h", "-o", "%P|%D|%G"], capture_output=True, text=True
    )
    if sinfo.returncode:
        raise ConfigError(f"sinfo failed: {sinfo.stderr.strip()}")
    partitions = parse_sinfo(sinfo.stdout)
    partition = os.environ.get("WEBFG_SLURM_GPU_PARTITION", "")
    for rnd in ROUNDS:
        for m in config["rounds"][rnd]["models"]:
            try:
                check_fits(m, model_resources(m), partitions, partition)
            except ResourceError as e:
                raise ConfigError(f"config {e}") from None


check_config()


wildcard_constraints:
    round="|".join(ROUNDS),
    model="|".join(MODELS),
    split="|".join(["val", "train"] + SPLITS),
    threshold=r"[0-9]*\.?[0-9]+",


def data_ready(wildcards=None):
    """The demo rule's marker when the demo is built by the workflow; nothing otherwise."""
    return (
        [os.path.join(DATA_ROOT, "answers", "spec.json")]
        if config["demo"]["build"]
        else []
    )


def train_list_of_round(rnd):
    """Rounds after the noise-filter round train on the filtered list."""
    if NOISE["enabled"] and rnd != NOISE["round"]:
        return "results/clean/train_filtered.txt"
    return "results/clean/train.txt"


def pseudo_lists(rnd):
    pseudo = config["rounds"][rnd].get("pseudo")
    if not pseudo:
        return []
    return [
        f"results/{pseudo['from']}/pseudo/{s}@{pseudo['threshold']:g}.txt"
        for s in pseudo["splits"]
    ]


def prediction_files(stem):
    return [stem + ext for ext in (".npy", ".rows.txt", ".json")]


def round_predictions(rnd, split):
    return [
        f"results/{rnd}/infer/{m}/{split}.npy" for m in config["rounds"][rnd]["models"]
    ]


def round_targets(rnd):
    return [f"results/{rnd}/ensemble/{s}.npy" for s in SPLITS]


def all_targets():
    targets = ["results/submit.zip", "results/clean/classes.tsv"]
    if ANSWERS:
        targets.append("results/summary.tsv")
    return targets + plot_targets()


def plot_targets():
    """Every figure the report shows for this config."""
    targets = [
        f"results/plots/{r}/{m}.history.png"
        for r in ROUNDS
        for m in config["rounds"][r]["models"]
    ]
    targets += ["results/plots/val_accuracy.png", "results/plots/removals.png"]
    targets += ["results/plots/class_counts.png"]
    for r in ROUNDS:
        for listing in pseudo_lists(r):
            rnd, _, name = listing.split("/")[1:]
            targets.append(f"results/plots/{rnd}/pseudo_{name[: -len('.txt')]}.png")
    if ANSWERS:
        targets.append("results/plots/round_accuracy.png")
    return list(dict.fromkeys(targets))
