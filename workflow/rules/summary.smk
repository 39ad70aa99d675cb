if ANSWERS:

    rule summarize:
        input:
            # every results file webfg.summary reads (webfg.summary.summary_inputs)
            unpack(
                lambda w: summary_inputs(
                    L, config["rounds"], SPLITS, FINAL, NOISE["enabled"]
                )
            ),
        output:
            tsv=report(
                L.summary_tsv,
                category="Summary",
                labels={"file": "accuracy per round"},
                caption="../report/summary.rst",
            ),
            json=L.summary_json,
        log:
            "logs/summary.log",
        localrule: True
        conda:
            "../../envs/webfg.yaml"
        params:
            # webfg.layout's results folder: the one summary.tsv is written to
            results=lambda w, output: os.path.dirname(output.tsv),
            answers=ANSWERS,
            rounds=config["rounds"],
            splits=SPLITS,
            final=FINAL,
            noise_filter=NOISE["enabled"],
        script:
            "../scripts/summarize.py"
