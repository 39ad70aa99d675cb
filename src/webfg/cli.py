"""``webfg <stage>``: every stage of the workflow as a standalone command.

The Snakemake rules call the same functions; these commands are for running or
debugging one stage by hand. Errors in user input print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from webfg.io import InputError


def _demo_data(a):
    from webfg.demo import PRESETS, build_demo

    info = build_demo(a.out, PRESETS[a.preset], a.seed)
    print(f"{a.out}: {info['counts']}")


def _clean_split(a):
    from webfg.clean import clean_split

    clean_split(a.root, a.out, num_classes=a.num_classes, val_fraction=a.val_fraction,
                val_min_per_class=a.val_min_per_class, seed=a.seed, meta_all=a.meta_all, test_splits=a.splits)


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


def _infer(a):
    from pathlib import Path

    from webfg.infer import infer_splits
    from webfg.io import read_split_list

    splits = {"val": (None, Path(a.out_dir) / "val")}
    for listing in a.lists:
        name = Path(listing).stem
        splits[name] = (read_split_list(listing, labelled=False), Path(a.out_dir) / name)
    infer_splits(a.model, a.root, read_split_list(a.val_list), splits, threads=a.threads)


def _ensemble(a):
    from webfg.io import load_predictions
    from webfg.postprocess import accuracy_from_filename, ensemble_predictions, ensemble_weights

    if a.accuracy_from_name:
        accs = [accuracy_from_filename(s) for s in a.stems]
    else:
        accs = [load_predictions(s)[2]["val_accuracy"] for s in a.stems]
    ensemble_predictions(a.stems, ensemble_weights(accs, a.power), a.out, meta={"power": a.power})


def _pseudo(a):
    from webfg.io import load_predictions, write_split_list
    from webfg.postprocess import pseudo_labels

    probs, rows, _ = load_predictions(a.stem)
    pseudo = pseudo_labels(probs, rows, a.threshold)
    write_split_list(a.out, pseudo)
    print(f"kept {len(pseudo)} of {len(rows)}")


def _merge_meta(a):
    from webfg.io import read_split_list, write_split_list
    from webfg.postprocess import merge_meta

    write_split_list(a.out, merge_meta(*[read_split_list(p) for p in a.lists]))


def _redistribute(a):
    from webfg.io import load_predictions
    from webfg.postprocess import redistribute_labels

    probs, rows, _ = load_predictions(a.stem)
    redistribute_labels(probs, rows, a.method, a.k, a.out, a.counts)


def _submit(a):
    from webfg.postprocess import read_labels, write_submission

    rows, labels = read_labels(a.labels)
    write_submission(a.csv, a.zip, rows, labels)


def _import_legacy(a):
    from pathlib import Path

    from webfg.legacy import import_legacy

    for pkl in a.pickles:
        meta = import_legacy(pkl, Path(a.out_dir) / Path(pkl).stem, a.split)
        print(f"{pkl}: accuracy {meta['val_accuracy']:.4f} -> {Path(a.out_dir) / Path(pkl).stem}.npy")


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
    s.add_argument("--val-fraction", type=float, default=0.1)
    s.add_argument("--val-min-per-class", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--meta-all")
    s.add_argument("--splits", nargs="*", default=["testa", "testb"])
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

    s = sub.add_parser("launch", help="start a command as one process per GPU (srun in Slurm, torchrun here)",
                       epilog="example: webfg launch --tasks-per-node 2 -- train --config m.yaml ...")
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
    s.add_argument("lists", nargs="*", help="unlabelled lists; each is written as <out-dir>/<list stem>.npy")
    s.set_defaults(func=_infer)

    s = sub.add_parser("ensemble", help="accuracy-weighted ensemble of prediction files")
    s.add_argument("stems", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--power", type=float, default=25)
    s.add_argument("--accuracy-from-name", action="store_true", help="legacy: '...-7620' in the name = 0.7620")
    s.set_defaults(func=_ensemble)

    s = sub.add_parser("pseudo", help="pseudo-labels: rows whose max probability > threshold")
    s.add_argument("stem")
    s.add_argument("--threshold", type=float, default=0.45)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_pseudo)

    s = sub.add_parser("merge-meta", help="concatenate labelled lists (no path twice)")
    s.add_argument("lists", nargs="+")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_merge_meta)

    s = sub.add_parser("redistribute", help="balance predicted class counts (greedy K)")
    s.add_argument("stem")
    s.add_argument("--k", type=int, required=True)
    s.add_argument("--method", default="greedy", choices=["greedy", "none"])
    s.add_argument("--out", required=True)
    s.add_argument("--counts", required=True)
    s.set_defaults(func=_redistribute)

    s = sub.add_parser("import-legacy", help="the original's result pickles -> prediction files (safely)",
                       epilog="example: webfg import-legacy results/*.pkl --out-dir results/legacy --split testb")
    s.add_argument("pickles", nargs="+")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--split", default="testb", help="rows become <split>/<file name>")
    s.set_defaults(func=_import_legacy)

    s = sub.add_parser("submit", help="labels TSV -> submission CSV + zip")
    s.add_argument("labels")
    s.add_argument("--csv", default="results/submit.csv")
    s.add_argument("--zip", default="results/submit.zip")
    s.set_defaults(func=_submit)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, FileExistsError) as e:
        print(f"webfg {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
