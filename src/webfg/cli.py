"""``webfg <stage>``: every stage of the workflow as a standalone command.

The Snakemake rules call the same functions; these commands are for running or
debugging one stage by hand. Errors in user input print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from webfg.config import schema_default
from webfg.io import InputError


def _demo_data(a):
    from webfg.demo import PRESETS, build_demo

    info = build_demo(a.out, PRESETS[a.preset], a.seed)
    print(f"{a.out}: {info['counts']}")


def _clean_split(a):
    from webfg.clean import clean_split

    clean_split(
        a.root,
        a.out,
        num_classes=a.num_classes,
        val_fraction=a.val_fraction,
        val_min_per_class=a.val_min_per_class,
        seed=a.seed,
        meta_all=a.meta_all,
        test_splits=a.splits,
    )


def _train(a):
    from webfg.train import load_model_config, train

    if a.config_json is not None:
        import json

        from webfg.config import ModelConfig

        cfg = ModelConfig.from_dict(json.loads(a.config_json), where="--config-json")
    else:
        cfg = load_model_config(a.config)
    num_classes = a.num_classes
    if num_classes is None:
        from webfg.io import read_json

        num_classes = read_json(a.stats)["num_classes"]
    train(cfg, a.root, a.train_list, a.val_list, num_classes, a.out, a.state_dir, a.threads)


def _launch(a):
    import os
    import shlex

    from webfg.cluster import launch_command

    argv = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not argv:
        raise InputError("give the command to start after --, e.g. -- train --config m.yaml ...")
    cmd = launch_command(argv, a.nodes, a.tasks_per_node, a.cpus_per_task, a.gpus > 0)
    if cmd is None:
        return main(argv)
    print(f"webfg launch: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)


def _pretrain_mae(a):
    from webfg.mae import load_mae_config, pretrain

    if a.config_json is not None:
        import json

        from webfg.config import MAEConfig

        try:
            cfg = MAEConfig.from_dict(json.loads(a.config_json), where="--config-json")
        except (ValueError, TypeError) as e:
            raise InputError(str(e)) from None
    else:
        cfg = load_mae_config(a.config)
    pretrain(cfg, a.root, a.train_list, a.unlabelled, a.out, a.state_dir, a.threads)


def _infer(a):
    from webfg.infer import infer_lists

    infer_lists(a.model, a.root, a.val_list, a.lists, a.out_dir, threads=a.threads)


def _expand(paths, suffix: str) -> list[str]:
    """Paths as given, a folder standing for its ``*<suffix>`` files (sorted); an empty
    folder is an error naming it."""
    from pathlib import Path

    out = []
    for p in paths:
        if Path(p).is_dir():
            found = sorted(str(f)[: -len(suffix)] if suffix == ".npy" else str(f) for f in Path(p).glob(f"*{suffix}"))
            if not found:
                raise InputError(f"{p}: folder holds no *{suffix} files")
            out += found
        else:
            out.append(p)
    return out


def _ensemble(a):
    from webfg.io import prediction_paths
    from webfg.postprocess import (
        accuracy_from_filename,
        choose_power,
        ensemble_predictions,
        member_accuracies,
        member_weights,
        parse_power,
        write_power_choice,
    )

    a.stems = _expand(a.stems, ".npy")
    power = parse_power(a.power, "--power")
    if power == "auto" and a.accuracy_from_name:
        raise InputError(
            "--power auto: needs the members' val probabilities, which result pickles do not "
            "have; give a number (the original's 25)"
        )
    accs = [accuracy_from_filename(s) for s in a.stems] if a.accuracy_from_name else member_accuracies(a.stems)
    table = None
    if power == "auto":
        if not a.val_list:
            raise InputError("--power auto needs --val-list, the labelled val split (e.g. results/clean/val.txt)")
        val_stems = a.val or [str(prediction_paths(s)[0].parent / "val") for s in a.stems]
        if len(val_stems) != len(a.stems):
            raise InputError(f"--val: {len(val_stems)} val predictions for {len(a.stems)} members")
        power, table = choose_power(val_stems, a.val_list, accs, key="--power", accuracy_from=a.stems)
        print(f"power auto: {power:g} (val accuracy " + ", ".join(f"{p:g}: {acc:.4f}" for p, acc in table) + ")")
    meta = {"power": power, **({"power_auto": [list(row) for row in table]} if table else {})}
    ensemble_predictions(a.stems, member_weights(a.stems, accs, power), a.out, meta=meta, dtype=a.dtype)
    if table:
        write_power_choice(
            a.power_report or str(prediction_paths(a.out)[0])[: -len(".npy")] + ".power.tsv", table, power
        )


def _pseudo(a):
    from webfg.pseudo import check_scheme, make_pseudo

    try:
        check_scheme(a.scheme, a.threshold, a.min_threshold, a.fraction, "-")
    except ValueError as e:
        raise InputError(str(e).replace("-.", "--").replace("_", "-")) from None
    out_yield = a.yield_tsv or a.out.removesuffix(".txt") + ".yield.tsv"
    make_pseudo(a.stem, a.out, out_yield, a.scheme, a.threshold, a.min_threshold, a.fraction)


def _merge_meta(a):
    from webfg.io import read_split_list, write_split_list
    from webfg.postprocess import merge_meta

    write_split_list(a.out, merge_meta(*[read_split_list(p) for p in a.lists]))


def _redistribute(a):
    from webfg.io import load_predictions
    from webfg.postprocess import check_redistribute_params, redistribute_labels, train_class_counts

    if a.method == "greedy" and a.k is None:
        raise InputError("--method greedy needs --k (a little below rows/classes, e.g. 16 for 90,000 / 5,000)")
    if a.method == "map" and a.train_list is None:
        raise InputError(
            "--method map needs --train-list, the labelled list the members were trained on "
            "(e.g. results/clean/train.txt): its class counts are the training prior it corrects"
        )
    params = {
        "k": a.k or 0,
        "strength": a.strength,
        "temperature": a.temperature,
        "candidates": a.candidates,
        "concentration": a.concentration,
    }
    check_redistribute_params(a.method, params, "--")
    probs, rows, _ = load_predictions(a.stem)
    counts = train_class_counts(a.train_list, probs.shape[1]) if a.method == "map" else None
    redistribute_labels(probs, rows, a.method, a.out, a.counts, train_counts=counts, prefix="--", **params)


def _submit(a):
    from webfg.postprocess import read_labels, write_submission

    rows, labels = read_labels(a.labels)
    write_submission(a.csv, a.zip, rows, labels)


def _import_legacy(a):
    from pathlib import Path

    from webfg.legacy import import_legacy

    for pkl in _expand(a.pickles, ".pkl"):
        meta = import_legacy(pkl, Path(a.out_dir) / Path(pkl).stem, a.split)
        acc = "none in the name" if meta["val_accuracy"] is None else f"{meta['val_accuracy']:.4f}"
        print(f"{pkl}: accuracy {acc} -> {Path(a.out_dir) / Path(pkl).stem}.npy")


def _soup(a):
    from webfg.soup import soup_files

    soup_files(a.checkpoints, a.out)


def _init(a):
    from webfg.init import init

    init(a.data_dir, a.out, test_splits=a.splits, force=a.force, allow_broken=a.allow_broken)


def _status(a):
    import time
    from pathlib import Path

    from webfg.io import read_yaml
    from webfg.status import collect_status, format_status, running_lines

    path = Path(a.configfile)
    if not path.is_file():
        raise InputError(f"{path}: config file not found (pass --configfile)")
    config = read_yaml(path)
    if not isinstance(config, dict) or not {"data", "models", "rounds"} <= set(config):
        raise InputError(f"{path}: not a webfg config (expected the keys data, models, rounds)")
    if a.watch is None:
        print(format_status(collect_status(config, a.directory)))
        return
    clear = sys.stdout.isatty() and not a.running
    try:
        while True:
            status = collect_status(config, a.directory)
            if a.running:
                for line in running_lines(status):
                    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            else:
                print(("\x1b[H\x1b[2J" if clear else "") + format_status(status), flush=True)
            time.sleep(a.watch)
    except KeyboardInterrupt:
        pass


def _convert(a):
    import json

    from webfg.convert import convert_checkpoint, model_config

    try:
        kwargs = json.loads(a.arch_kwargs) if a.arch_kwargs else None
    except json.JSONDecodeError as e:
        raise InputError(f"--arch-kwargs: not JSON ({e})") from None
    cfg = model_config(a.config, a.model, arch=a.arch, head=a.head, arch_kwargs=kwargs, img_size=a.img_size)
    convert_checkpoint(a.in_path, cfg, a.out, num_classes=a.num_classes, train_list=a.train_list)


class UserError(SystemExit):
    """Exit status 2 (like argparse's usage errors); str() is the one-line message."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="webfg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo-data", help="build the embedded demo dataset")
    s.add_argument("--out", default="data/demo")
    s.add_argument("--preset", default="full", choices=["full", "tiny"])
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_demo_data)

    s = sub.add_parser("clean-split", help="clean the training images and split off val")
    s.add_argument("root")
    s.add_argument("--out", default="results/clean")
    s.add_argument("--num-classes", type=int)
    s.add_argument("--val-fraction", type=float, default=schema_default("clean.val_fraction"))
    s.add_argument("--val-min-per-class", type=int, default=schema_default("clean.val_min_per_class"))
    s.add_argument("--seed", type=int, default=schema_default("clean.seed"))
    s.add_argument("--meta-all")
    s.add_argument("--splits", nargs="*", default=schema_default("data.test_splits"))
    s.set_defaults(func=_clean_split)

    s = sub.add_parser("train", help="train one model (resumes from its state folder)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="the model entry as a YAML file")
    g.add_argument("--config-json", help="the model entry as a JSON string (what the workflow passes)")
    s.add_argument("--root", required=True)
    s.add_argument("--train-list", required=True)
    s.add_argument("--val-list", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--num-classes", type=int)
    g.add_argument("--stats", help="clean-split's stats.json, which holds num_classes")
    s.add_argument("--out", required=True)
    s.add_argument("--state-dir")
    s.add_argument("--threads", type=int)
    s.set_defaults(func=_train)

    s = sub.add_parser(
        "pretrain-mae",
        help="MAE pre-training of a ViT encoder (resumes from its state folder)",
        epilog="the encoder file starts a model through its pretrained_file",
    )
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="YAML of webfg.config.MAEConfig fields")
    g.add_argument("--config-json", help="the pretrain entry as a JSON string (what the workflow passes)")
    s.add_argument("--root", required=True)
    s.add_argument("--train-list", required=True, help="labelled list; its labels are not used")
    s.add_argument("--unlabelled", nargs="*", default=[], help="unlabelled lists (e.g. results/clean/testa.txt)")
    s.add_argument("--out", required=True)
    s.add_argument("--state-dir")
    s.add_argument("--threads", type=int)
    s.set_defaults(func=_pretrain_mae)

    s = sub.add_parser(
        "launch",
        help="start a command as one process per GPU (srun in Slurm, torchrun here)",
        epilog="example: webfg launch --tasks-per-node 2 -- train --config m.yaml ...",
    )
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--tasks-per-node", type=int, default=1, help="processes per node (one per GPU)")
    s.add_argument("--cpus-per-task", type=int, default=1)
    s.add_argument("--gpus", type=int, default=0, help="GPUs of the whole job (0: CPU only)")
    s.add_argument("args", nargs=argparse.REMAINDER, help="-- then a webfg command and its options")
    s.set_defaults(func=_launch)

    s = sub.add_parser("infer", help="flip-TTA probabilities of one model on val and unlabelled lists")
    s.add_argument("--model", required=True)
    s.add_argument("--root", required=True)
    s.add_argument("--val-list", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--threads", type=int)
    s.add_argument(
        "lists", nargs="*", help="image lists (train.txt: labelled); each is written as <out-dir>/<list stem>.npy"
    )
    s.set_defaults(func=_infer)

    s = sub.add_parser(
        "ensemble",
        help="accuracy-weighted ensemble of prediction files",
        epilog="example: webfg ensemble results/b3/infer/*/testb --power 25 --out results/final/ensemble\n"
        "         webfg ensemble legacy/*-7[0-9][0-9][0-9] --accuracy-from-name --out ens",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("stems", nargs="+", help="prediction stems (or .npy files), or folders of them")
    s.add_argument("--out", required=True)
    s.add_argument(
        "--power",
        default=str(schema_default("final.power")),
        help="weights (acc_i / min acc)^power; 0 = plain mean; auto = the "
        "power of {0, 1, 2, 4, 8, 16, 25} best on val, by mean per-class recall (needs --val-list)",
    )
    s.add_argument("--accuracy-from-name", action="store_true", help="legacy: '...-7620' in the name = 0.7620")
    s.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16"],
        help="float32 (default) makes no top-2 ties by rounding; float16 halves the file",
    )
    s.add_argument("--val-list", help="power auto: labelled val list (e.g. results/clean/val.txt)")
    s.add_argument(
        "--val",
        nargs="+",
        help="power auto: the members' val predictions, in member order (default: the 'val' stem next to each member)",
    )
    s.add_argument("--power-report", help="power auto: TSV of the grid (default: <out>.power.tsv)")
    s.set_defaults(func=_ensemble)

    s = sub.add_parser(
        "pseudo",
        help="pseudo-labels of an ensemble (fixed threshold, or class-aware: adaptive, balanced)",
        epilog="example: webfg pseudo results/a1/ensemble/testa --threshold 0.45 --out pseudo_testa.txt\n"
        "         webfg pseudo results/a1/ensemble/testa --scheme balanced --fraction 0.8 --out p.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("stem")
    s.add_argument(
        "--scheme",
        default=schema_default("rounds.*.pseudo.scheme"),
        choices=["fixed", "adaptive", "balanced"],
        help="fixed: max probability > threshold (the recipe); adaptive: per-class thresholds scaled "
        "by each class's confident predictions; balanced: at most fraction*N/C per predicted class",
    )
    s.add_argument(
        "--threshold",
        type=float,
        default=schema_default("rounds.*.pseudo.threshold"),
        help="fixed/adaptive: the (highest) threshold",
    )
    s.add_argument(
        "--min-threshold",
        type=float,
        default=schema_default("rounds.*.pseudo.min_threshold"),
        help="adaptive/balanced: the lowest bar",
    )
    s.add_argument(
        "--fraction",
        type=float,
        default=schema_default("rounds.*.pseudo.fraction"),
        help="balanced: the per-class quota, times N/C",
    )
    s.add_argument("--out", required=True)
    s.add_argument("--yield-tsv", help="rows kept per fixed threshold (default: <out without .txt>.yield.tsv)")
    s.set_defaults(func=_pseudo)

    s = sub.add_parser("merge-meta", help="concatenate labelled lists (no path twice)")
    s.add_argument("lists", nargs="+")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_merge_meta)

    s = sub.add_parser(
        "redistribute",
        help="balance predicted class counts (map, greedy K, prior, transport)",
        epilog="example: webfg redistribute results/final/ensemble --method map "
        "--train-list results/clean/train.txt --out labels.tsv --counts counts.tsv\n"
        "         webfg redistribute results/final/ensemble --method greedy --k 16 "
        "--out labels.tsv --counts counts.tsv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("stem")
    s.add_argument(
        "--method",
        default=schema_default("final.redistribute.method"),
        choices=["map", "greedy", "prior", "transport", "none"],
        help="map = training-prior logit adjustment + MAP-EM test prior (recommended: never "
        "below argmax in bench/); greedy = the original's; prior = prior correction toward "
        "uniform; transport = near-exact balance (test sets with N/C rows per class)",
    )
    s.add_argument("--k", type=int, help="greedy: classes predicted fewer than k times take rows up to k")
    s.add_argument("--train-list", help="map: labelled list the members were trained on (its class counts)")
    s.add_argument(
        "--concentration",
        type=float,
        default=schema_default("final.redistribute.concentration"),
        help="map: Dirichlet pull of the test prior toward uniform, in N/C rows per class "
        "(0 = the rows alone, inf = uniform)",
    )
    s.add_argument(
        "--strength",
        type=float,
        default=schema_default("final.redistribute.strength"),
        help="prior/transport: 0 = argmax, 1 = full correction",
    )
    s.add_argument(
        "--temperature",
        type=float,
        default=schema_default("final.redistribute.temperature"),
        help="transport: final temperature",
    )
    s.add_argument(
        "--candidates",
        type=int,
        default=schema_default("final.redistribute.candidates"),
        help="map/prior/transport: classes considered per row",
    )
    s.add_argument("--out", required=True)
    s.add_argument("--counts", required=True)
    s.set_defaults(func=_redistribute)

    s = sub.add_parser(
        "import-legacy",
        help="the original's result pickles -> prediction files (safely)",
        epilog="example: webfg import-legacy results/*.pkl --out-dir results/legacy --split testb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("pickles", nargs="+", help="result pickles, or folders of them")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--split", default="testb", help="rows become <split>/<file name>")
    s.set_defaults(func=_import_legacy)

    s = sub.add_parser(
        "convert",
        help="a timm/MMCls/MMSelfSup/webfg checkpoint -> a webfg model file for infer",
        epilog="example: webfg convert --in swin-l-384-arc-roundb3.pth --config config/config.yaml "
        "--model swinv2_l_arc --train-list meta/roundb3/train.txt --out swinv2_l_b3.pt",
    )
    s.add_argument("--in", dest="in_path", required=True, help="the checkpoint, with its classification head")
    s.add_argument("--out", required=True)
    s.add_argument("--config", help="a model YAML, or a pipeline config with --model")
    s.add_argument("--model", help="the models.<name> entry of --config")
    s.add_argument("--arch", help="timm model name (instead of or over --config)")
    s.add_argument("--head", choices=["linear", "arcface"])
    s.add_argument("--arch-kwargs", help='JSON, e.g. \'{"img_size": 448, "global_pool": "avg", "fc_norm": true}\'')
    s.add_argument("--img-size", type=int)
    s.add_argument("--num-classes", type=int, help="check the head has this many classes")
    s.add_argument("--train-list", help="labelled list the model was trained on: class counts for logit adjustment")
    s.set_defaults(func=_convert)

    s = sub.add_parser(
        "submit",
        help="labels TSV -> submission CSV + zip",
        epilog="example: webfg submit results/final/labels.tsv --csv submit.csv --zip submit.zip",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("labels")
    s.add_argument("--csv", default="results/submit.csv")
    s.add_argument("--zip", default="results/submit.zip")
    s.set_defaults(func=_submit)

    s = sub.add_parser(
        "init",
        help="inspect a dataset in the ACCV layout and write a config for it",
        epilog="example: webfg init data/mybirds --out config/mybirds.yaml",
    )
    s.add_argument("data_dir")
    s.add_argument("--out", default="config/my.yaml", help="config to write (default: %(default)s)")
    s.add_argument("--splits", nargs="+", help="test split folders (default: every folder next to train/)")
    s.add_argument("--force", action="store_true", help="overwrite --out")
    s.add_argument(
        "--allow-broken", action="store_true", help="accept unreadable training images (clean_split drops them)"
    )
    s.set_defaults(func=_init)

    s = sub.add_parser("status", help="which rounds and models are done, running or pending (starts nothing)")
    s.add_argument("--configfile", default="config/config.yaml")
    s.add_argument("-d", "--directory", default=".", help="the run's working directory")
    s.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="report again every SECONDS until interrupted (the table is redrawn on a terminal)",
    )
    s.add_argument(
        "--running",
        action="store_true",
        help="print only the running jobs' progress (epoch, rate, ETA), one line each, never clearing "
        "the screen: what `make demo` shows beside Snakemake",
    )
    s.set_defaults(func=_status)

    s = sub.add_parser(
        "soup",
        help="uniform soup of checkpoints, one in memory at a time (float64 sum)",
        epilog="example: webfg soup work/epoch_16.pth work/epoch_17.pth work/epoch_18.pth --out soup.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("checkpoints", nargs="+", help="summed in this order")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_soup)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, FileExistsError) as e:
        message = f"webfg {args.command}: error: {e}"
        print(message, file=sys.stderr)
        raise UserError(message) from None


if __name__ == "__main__":
    main()
