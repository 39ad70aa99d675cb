if config["demo"]["build"]:

    rule demo_data:
        output:
            spec=os.path.join(DATA_ROOT, "answers", "spec.json"),
        log:
            "logs/demo_data.log",
        # the demo's images, written from an installed package in seconds
        localrule: True
        conda:
            "../../envs/webfg.yaml"
        params:
            root=lambda w, output: os.path.dirname(os.path.dirname(output.spec)),
            preset=config["demo"]["preset"],
            seed=config["demo"]["seed"],
        script:
            "../scripts/demo_data.py"
