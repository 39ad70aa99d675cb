"""The results layout: where every file of a run lives, in one place.

The workflow's rules (workflow/rules/*.smk) name their inputs and outputs with these
functions, and the package code that reads a run back (summary, status, the trainer's
history next to its weights) builds the same paths with them, so a path is written once.
Pass a wildcard (``"{round}"``) for an argument to get the rule's pattern::

    Layout().model("{round}", "{model}")   # results/{round}/train/{model}.pt
    Layout().model("r0", "swin_arc")       # results/r0/train/swin_arc.pt

Pseudo-label files carry their selection in the name, ``<split>@<tag>.txt``: the recipe's
fixed threshold is ``testa@0.45``, the class-aware schemes ``testa@adaptive0.45-min0.2``
and ``testa@balanced0.8-min0.2`` (see webfg.pseudo), so a changed scheme is a new file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PREDICTION_EXTS = (".npy", ".rows.txt", ".json")


def prediction_files(stem) -> list[str]:
    """The three files of one prediction stem (webfg.io.save_predictions)."""
    return [f"{stem}{ext}" for ext in PREDICTION_EXTS]


def history_of(weights) -> Path:
    """The per-epoch curve written next to a trainer's weights: ``<weights stem>.history.tsv``."""
    return Path(weights).with_suffix(".history.tsv")


def state_dir_of(weights) -> Path:
    """Resumable state of a trainer, next to its weights: ``<weights stem>.state/``."""
    return Path(weights).with_suffix(".state")


# ------------------------------------------------------------------ pseudo-label selection tags

_NUM = r"[0-9]*\.?[0-9]+(?:e-?[0-9]+)?"
PSEUDO_TAG = rf"{_NUM}|adaptive{_NUM}-min{_NUM}|balanced{_NUM}-min{_NUM}"  # wildcard constraint
_TAG = re.compile(
    rf"(?:(?P<fixed>{_NUM})|adaptive(?P<t>{_NUM})-min(?P<tmin>{_NUM})|balanced(?P<f>{_NUM})-min(?P<fmin>{_NUM}))"
)


def _num(x: float) -> str:
    """Shortest text that reads back as the same float (0.45 -> '0.45', 0 -> '0')."""
    text = f"{float(x):g}"
    return text if float(text) == float(x) else repr(float(x))


def pseudo_tag(
    scheme: str = "fixed", threshold: float = 0.45, min_threshold: float = 0.2, fraction: float = 0.8
) -> str:
    """The selection's part of a pseudo-label file name: only the parameters the scheme uses
    (webfg.pseudo.select), so equal selections share one file."""
    if scheme == "fixed":
        return _num(threshold)
    if scheme == "adaptive":
        return f"adaptive{_num(threshold)}-min{_num(min_threshold)}"
    if scheme == "balanced":
        return f"balanced{_num(fraction)}-min{_num(min_threshold)}"
    raise ValueError(f"pseudo scheme {scheme!r} is not one of fixed, adaptive, balanced")


def parse_pseudo_tag(tag: str) -> dict:
    """Inverse of ``pseudo_tag``: the keyword arguments of webfg.pseudo.select it stands for."""
    m = _TAG.fullmatch(tag)
    if not m:
        raise ValueError(f"{tag!r} is not a pseudo-label selection tag (e.g. 0.45, adaptive0.45-min0.2)")
    if m["fixed"] is not None:
        return {"scheme": "fixed", "threshold": float(m["fixed"])}
    if m["t"] is not None:
        return {"scheme": "adaptive", "threshold": float(m["t"]), "min_threshold": float(m["tmin"])}
    return {"scheme": "balanced", "fraction": float(m["f"]), "min_threshold": float(m["fmin"])}


def pseudo_settings(pseudo: dict) -> dict:
    """The selection keys of a ``rounds.<r>.pseudo`` entry, as webfg.pseudo.select takes them
    (the schema's validation fills their defaults)."""
    return {k: pseudo[k] for k in ("scheme", "threshold", "min_threshold", "fraction")}


def pseudo_tag_of(pseudo: dict) -> str:
    """The file-name tag of a ``rounds.<r>.pseudo`` entry."""
    return pseudo_tag(**pseudo_settings(pseudo))


def pseudo_sources(round_entry: dict) -> list[tuple[str, str, str]]:
    """(round that makes them, split, tag) of each pseudo-label list a ``rounds.<r>`` entry
    trains on: the arguments of ``Layout.pseudo``."""
    pseudo = round_entry.get("pseudo")
    if not pseudo:
        return []
    return [(pseudo["from"], s, pseudo_tag_of(pseudo)) for s in pseudo["splits"]]


# ------------------------------------------------------------------ the layout


@dataclass(frozen=True)
class Layout:
    """Paths under ``results`` (and job logs under ``logs``), relative to the run's directory."""

    results: str = "results"
    logs: str = "logs"

    def _r(self, *parts: str) -> str:
        return "/".join((self.results, *parts))

    # --- cleaning (webfg.clean.clean_split writes these names into clean_dir)
    @property
    def clean_dir(self) -> str:
        return self._r("clean")

    def clean(self, name: str) -> str:
        return self._r("clean", name)

    @property
    def all_list(self) -> str:
        return self.clean("all.txt")

    @property
    def train_list(self) -> str:
        return self.clean("train.txt")

    @property
    def val_list(self) -> str:
        return self.clean("val.txt")

    @property
    def removed(self) -> str:
        return self.clean("removed.tsv")

    @property
    def clean_stats(self) -> str:
        return self.clean("stats.json")

    @property
    def classes(self) -> str:
        return self.clean("classes.tsv")

    @property
    def train_filtered(self) -> str:
        return self.clean("train_filtered.txt")

    @property
    def val_filtered(self) -> str:
        return self.clean("val_filtered.txt")

    @property
    def noise_removed(self) -> str:
        return self.clean("noise_removed.tsv")

    def split_list(self, split: str) -> str:
        """An unlabelled test split's image list (or train.txt / val.txt for those names)."""
        return self.clean(f"{split}.txt")

    # --- pre-training
    def pretrain(self, name: str) -> str:
        return self._r("pretrain", f"{name}.pth")

    # --- a round
    def meta_train(self, rnd: str) -> str:
        """The round's training list: cleaned (filtered) list + its pseudo-labels."""
        return self._r(rnd, "meta", "train.txt")

    def model(self, rnd: str, model: str) -> str:
        return self._r(rnd, "train", f"{model}.pt")

    def history(self, rnd: str, model: str) -> str:
        return str(history_of(self.model(rnd, model)))

    def state_dir(self, rnd: str, model: str) -> str:
        return str(state_dir_of(self.model(rnd, model)))

    def prediction(self, rnd: str, model: str, split: str, ext: str = "") -> str:
        """One model's predictions on a split: the stem, or its ``ext`` file (``.npy``, ``.rows.txt``, ``.json``)."""
        return self._r(rnd, "infer", model, split + ext)

    def ensemble(self, rnd: str, split: str, ext: str = "") -> str:
        """A round's unweighted ensemble on a split: the stem, or its ``ext`` file."""
        return self._r(rnd, "ensemble", split + ext)

    def pseudo(self, rnd: str, split: str, tag: str) -> str:
        """Pseudo-labels made by round ``rnd``'s ensemble on ``split`` (tag: ``pseudo_tag``)."""
        return self._r(rnd, "pseudo", f"{split}@{tag}.txt")

    def pseudo_yield(self, rnd: str, split: str, tag: str) -> str:
        return self._r(rnd, "pseudo", f"{split}@{tag}.yield.tsv")

    def job_log(self, rnd: str, stage: str, model: str) -> str:
        """A training (stage ``train``) or inference (``infer``) job's log."""
        return f"{self.logs}/{rnd}/{stage}/{model}.log"

    # --- the submission
    @property
    def final_ensemble(self) -> str:
        return self._r("final", "ensemble")

    @property
    def final_power(self) -> str:
        return self._r("final", "power.tsv")

    @property
    def final_labels(self) -> str:
        return self._r("final", "labels.tsv")

    @property
    def class_counts(self) -> str:
        return self._r("final", "class_counts.tsv")

    @property
    def submit_csv(self) -> str:
        return self._r("submit.csv")

    @property
    def submit_zip(self) -> str:
        return self._r("submit.zip")

    @property
    def summary_tsv(self) -> str:
        return self._r("summary.tsv")

    @property
    def summary_json(self) -> str:
        return self._r("summary.json")

    # --- the report's figures
    def plot(self, name: str) -> str:
        return self._r("plots", f"{name}.png")

    def plot_history(self, rnd: str, model: str) -> str:
        return self._r("plots", rnd, f"{model}.history.png")

    def plot_pseudo(self, rnd: str, split: str, tag: str) -> str:
        return self._r("plots", rnd, f"pseudo_{split}@{tag}.png")
