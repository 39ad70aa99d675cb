# webfg: train -> pseudo-label -> retrain, as one DAG. The rules live in workflow/
# (the Snakemake catalog's layout); this file is what `snakemake` finds in the
# repository root. `rule all` sits here because an include resets the default target.


include: "workflow/Snakefile"


rule all:
    default_target: True
    input:
        all_targets(),
