# The original's quick path from its result pickles (config key `legacy`):
#   <results_dir>/*.pkl -> results/legacy/import/<name>.npy (restricted unpickler)
#   -> weighted ensemble (power 25, accuracies from the names) -> redistribution
#   -> results/legacy/submit.zip, and results/legacy/pseudo.txt (`testb/<file> <label>`)
# from the plain mean, as the original's creat_pseudo.py made them.
import glob
import os
import re

from snakemake.utils import validate

validate(config["legacy"], schema="../schemas/legacy.schema.yaml")
LEGACY = config["legacy"]
if LEGACY["power"] == "auto":
    raise ValueError(
        "config legacy.power: auto needs the members' val probabilities, which result "
        "pickles do not have; give a number (the original's 25)"
    )
LEGACY_NAMES = sorted(
    os.path.basename(p)[: -len(".pkl")]
    for p in glob.glob(os.path.join(LEGACY["results_dir"], "*.pkl"))
)
if not LEGACY_NAMES:
    raise ValueError(
        f"config legacy.results_dir: no *.pkl result files in {LEGACY['results_dir']!r}"
    )


def legacy_files(stem):
    return [stem + ext for ext in (".npy", ".rows.txt", ".json")]


def legacy_members(wildcards=None):
    return [f"results/legacy/import/{n}.npy" for n in LEGACY_NAMES]


rule legacy:
    input:
        "results/legacy/submit.zip",
        "results/legacy/pseudo.txt",
    localrule: True


rule legacy_import:
    input:
        os.path.join(LEGACY["results_dir"], "{name}.pkl"),
    output:
        legacy_files("results/legacy/import/{name}"),
    log:
        "logs/legacy/import/{name}.log",
    wildcard_constraints:
        name="|".join(re.escape(n) for n in LEGACY_NAMES),
    conda:
        "../../envs/webfg.yaml"
    params:
        split=LEGACY["split"],
    script:
        "../scripts/legacy_import.py"


rule legacy_ensemble:
    input:
        members=legacy_members,
    output:
        legacy_files("results/legacy/ensemble"),
    log:
        "logs/legacy/ensemble.log",
    benchmark:
        "benchmarks/legacy/ensemble.tsv"
    conda:
        "../../envs/webfg.yaml"
    params:
        power=LEGACY["power"],
        power_key="legacy.power",
        dtype="float32",  # no top-2 ties made by rounding
    script:
        "../scripts/ensemble_probs.py"


use rule legacy_ensemble as legacy_mean with:
    output:
        legacy_files("results/legacy/mean"),
    log:
        "logs/legacy/mean.log",
    benchmark:
        "benchmarks/legacy/mean.tsv"
    params:
        power=0,
        power_key="legacy.power",
        dtype="float16",


rule legacy_pseudo:
    input:
        "results/legacy/mean.npy",
    output:
        pseudo="results/legacy/pseudo.txt",
        yield_tsv="results/legacy/pseudo.yield.tsv",
    log:
        "logs/legacy/pseudo.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    params:
        selection={"scheme": "fixed", "threshold": LEGACY["pseudo_threshold"]},
    script:
        "../scripts/make_pseudo.py"


rule legacy_redistribute:
    input:
        ensemble="results/legacy/ensemble.npy",
    output:
        labels="results/legacy/labels.tsv",
        counts="results/legacy/class_counts.tsv",
    log:
        "logs/legacy/redistribute.log",
    benchmark:
        "benchmarks/legacy/redistribute.tsv"
    conda:
        "../../envs/webfg.yaml"
    params:
        config=LEGACY["redistribute"],
        key_prefix="legacy.redistribute.",
    script:
        "../scripts/redistribute.py"


rule legacy_submission:
    input:
        "results/legacy/labels.tsv",
    output:
        csv="results/legacy/submit.csv",
        zip="results/legacy/submit.zip",
    log:
        "logs/legacy/zip_submission.log",
    localrule: True
    conda:
        "../../envs/webfg.yaml"
    script:
        "../scripts/zip_submission.py"
