if ANSWERS:

    rule summarize:
        input:
            rounds=[round_targets(r) for r in ROUNDS],
            models=[
                f"results/{r}/infer/{m}/{FINAL['split']}.npy"
                for r in ROUNDS
                for m in config["rounds"][r]["models"]
            ],
            final="results/final/labels.tsv",
            ensemble="results/final/ensemble.npy",
            removed="results/clean/removed.tsv",
            noise=["results/clean/noise_removed.tsv"] if NOISE["enabled"] else [],
        output:
            tsv=report(
                "results/summary.tsv",
                category="Summary",
                labels={"file": "accuracy per round"},
                caption="../report/summary.rst",
            ),
            json="results/summary.json",
        log:
            "logs/summary.log",
        localrule: True
        conda:
            "../../envs/webfg.yaml"
        params:
            answers=ANSWERS,
            rounds=config["rounds"],
            splits=SPLITS,
            final=FINAL,
            noise_filter=NOISE["enabled"],
        script:
            "../scripts/summarize.py"
