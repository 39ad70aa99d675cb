"""Score every stage against an answer key: the table that shows whether the rounds help.

Reads a run's results through webfg.layout (the paths the rules write), only the files
``summary_inputs`` lists (the summarize rule's declared inputs), and an answer key folder holding ``<split>.txt`` (true labels of each test split) and optionally
``faults.tsv`` (the demo's injected faults: path, kind, true_label, given_label).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from webfg.clean import DUPLICATE_OF
from webfg.evaluate import accuracy, cleaning_scores, load_answers, pseudo_precision
from webfg.io import load_predictions, read_split_list, write_json, write_text
from webfg.layout import Layout, prediction_files, pseudo_sources
from webfg.postprocess import predicted_labels, read_labels

FILE_FAULTS = {"truncated", "undecodable", "duplicate", "conflict"}


def _pred_accuracy(stem, answers) -> float:
    probs, relpaths, _ = load_predictions(stem)
    return accuracy(relpaths, predicted_labels(probs), answers)


def read_faults(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def removed_paths(path, faults: set[str] = frozenset()) -> set[str]:
    """Paths in a removed.tsv. Of two identical files either one may go: a removed
    "duplicate of X" counts as X when X is the one the fault list names."""
    out = set()
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            kept = row["reason"].removeprefix(DUPLICATE_OF)
            out.add(kept if row["path"] not in faults and kept in faults else row["path"])
    return out


def summary_inputs(layout: Layout, rounds: dict, splits: list[str], final: dict, noise_filter: bool) -> dict:
    """Every results file ``summarize`` reads, by kind: the summarize rule's inputs, so that a
    change to any of them reruns it."""
    fs = final["split"]
    models = [(r, m) for r in rounds for m in rounds[r]["models"]]
    stems = {
        "val": [layout.prediction(r, m, "val") for r, m in models],
        "ensembles": [layout.ensemble(r, s) for r in rounds for s in splits],
        "models": [layout.prediction(r, m, fs) for r, m in [*models, *map(tuple, final["members"])]],
        "final": [layout.final_ensemble],
    }
    inputs = {kind: list(dict.fromkeys(f for stem in ss for f in prediction_files(stem))) for kind, ss in stems.items()}
    inputs["train_lists"] = [layout.meta_train(r) for r in rounds]
    inputs["pseudo"] = list(dict.fromkeys(layout.pseudo(*src) for r in rounds for src in pseudo_sources(rounds[r])))
    inputs["labels"] = [layout.final_labels]
    inputs["removed"] = [layout.removed] + ([layout.noise_removed] if noise_filter else [])
    return inputs


def summarize(
    layout: Layout, rounds: dict, splits: list[str], final: dict, answers_dir, noise_filter: bool, out_tsv, out_json
) -> dict:
    """Write one row per round, then the final ensemble, the submission, and the two
    cleaning stages scored against the injected faults (when ``faults.tsv`` exists).

    Columns: stage, train_images, pseudo_images, pseudo_precision, mean_val_accuracy,
    accuracy_<split> (ensemble, argmax) for every split, best_model_accuracy_<final split>,
    removed, removal_precision, removal_recall.
    """
    answers_dir = Path(answers_dir)
    answers = {s: load_answers(answers_dir / f"{s}.txt") for s in splits}
    all_answers = {k: v for a in answers.values() for k, v in a.items()}
    fs = final["split"]
    rows = []
    for name, rnd in rounds.items():
        row = {"stage": name, "train_images": len(read_split_list(layout.meta_train(name)))}
        labelled = [sample for src in pseudo_sources(rnd) for sample in read_split_list(layout.pseudo(*src))]
        row["pseudo_images"] = len(labelled)
        row["pseudo_precision"] = pseudo_precision(labelled, all_answers) if labelled else float("nan")
        vals = [load_predictions(layout.prediction(name, m, "val"))[2]["val_accuracy"] for m in rnd["models"]]
        row["mean_val_accuracy"] = float(np.mean(vals))
        for s in splits:
            row[f"accuracy_{s}"] = _pred_accuracy(layout.ensemble(name, s), answers[s])
        row[f"best_model_accuracy_{fs}"] = max(
            _pred_accuracy(layout.prediction(name, m, fs), answers[fs]) for m in rnd["models"]
        )
        rows.append(row)

    members = [_pred_accuracy(layout.prediction(r, m, fs), answers[fs]) for r, m in final["members"]]
    final_row = {
        "stage": "final_ensemble",
        f"accuracy_{fs}": _pred_accuracy(layout.final_ensemble, answers[fs]),
        f"best_model_accuracy_{fs}": max(members),
    }
    relpaths, labels = read_labels(layout.final_labels)
    submission_row = {
        "stage": "submission",
        f"accuracy_{fs}": accuracy(relpaths, labels, answers[fs]),
        f"best_model_accuracy_{fs}": max(members),
    }
    rows += [final_row, submission_row]

    summary = {"rounds": rows, "member_accuracies": dict(zip([f"{r}/{m}" for r, m in final["members"]], members))}
    faults_path = answers_dir / "faults.tsv"
    if faults_path.exists():
        faults = read_faults(faults_path)
        file_faults = {f["path"] for f in faults if f["kind"] in FILE_FAULTS}
        noisy = {f["path"] for f in faults if f["kind"] == "label_noise"}
        summary["clean_split"] = cleaning_scores(removed_paths(layout.removed, file_faults), file_faults)
        if noise_filter:
            summary["noise_filter"] = cleaning_scores(removed_paths(layout.noise_removed), noisy)

    for stage in ("clean_split", "noise_filter"):
        if stage in summary:
            scores = summary[stage]
            rows.append(
                {
                    "stage": stage,
                    "removed": scores["removed"],
                    "removal_precision": scores["precision"],
                    "removal_recall": scores["recall"],
                }
            )
    columns = [
        "stage",
        "train_images",
        "pseudo_images",
        "pseudo_precision",
        "mean_val_accuracy",
        *[f"accuracy_{s}" for s in splits],
        f"best_model_accuracy_{fs}",
        "removed",
        "removal_precision",
        "removal_recall",
    ]
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(_fmt(row.get(c, "")) for c in columns))
    write_text(out_tsv, "\n".join(lines) + "\n")
    write_json(out_json, _nan_to_none(summary))
    return summary


def _nan_to_none(obj):
    """JSON has no NaN: an undefined score (no pseudo-labels, nothing removed) is null."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return None if isinstance(obj, float) and np.isnan(obj) else obj


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4f}"
    return str(v)
