"""Pseudo-label selection schemes on a finished round, against the answer key (no retraining).

    python bench/bench_pseudo_selection.py RUN_DIR [--rounds r0 a2] [--splits testa testb]

RUN_DIR is a working directory of a run with an answer key (e.g. the demo's); its
results/<round>/ensemble/<split>.npy are read. For every scheme and setting it prints how many
images become pseudo-labels, their precision, and how evenly they spread over the classes
(classes left without any, the smallest and largest per-class counts, and the precision of
the worst class): what a scheme changes before any retraining. Whether that turns into
accuracy is measured by retraining (bench/bench_demo.py with an overlay config). Writes
bench/results/pseudo_selection.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from webfg.evaluate import load_answers
from webfg.io import load_predictions
from webfg.pseudo import select

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [
    ("fixed", {"threshold": 0.45}),
    ("fixed", {"threshold": 0.3}),
    ("fixed", {"threshold": 0.6}),
    ("adaptive", {"threshold": 0.45, "min_threshold": 0.2}),
    ("adaptive", {"threshold": 0.45, "min_threshold": 0.3}),
    ("adaptive", {"threshold": 0.6, "min_threshold": 0.3}),
    ("balanced", {"fraction": 0.5, "min_threshold": 0.2}),
    ("balanced", {"fraction": 0.7, "min_threshold": 0.2}),
    ("balanced", {"fraction": 0.9, "min_threshold": 0.3}),
]


def rows_for(run: Path, rnd: str, split: str, answers: dict[str, int]) -> list[str]:
    probs, relpaths, _ = load_predictions(run / f"results/{rnd}/ensemble/{split}")
    probs = np.asarray(probs, dtype=np.float32)
    confidence, predicted = probs.max(axis=1).astype(np.float64), probs.argmax(axis=1)
    truth = np.array([answers[r] for r in relpaths])
    num_classes = probs.shape[1]
    out = []
    for scheme, kw in SETTINGS:
        s = select(confidence, predicted, num_classes, scheme, **kw)
        kept = s.keep
        correct = predicted[kept] == truth[kept]
        counts = s.per_class_counts(predicted)
        per_class_precision = [correct[predicted[kept] == c].mean() for c in range(num_classes) if counts[c]]
        setting = ", ".join(f"{k} {v}" for k, v in kw.items())
        out.append(
            f"| {rnd} | {split} | {scheme} ({setting}) | {kept.sum()} / {kept.size} | "
            f"{correct.mean() if kept.any() else float('nan'):.3f} | {(counts == 0).sum()} | "
            f"{counts.min()} / {int(np.median(counts))} / {counts.max()} | "
            f"{min(per_class_precision) if per_class_precision else float('nan'):.2f} |"
        )
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--rounds", nargs="+", default=["r0"])
    ap.add_argument("--splits", nargs="+", default=["testa", "testb"])
    ap.add_argument("--answers", type=Path, help="answer-key folder (default: the run's data/demo/answers)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/pseudo_selection.md")
    a = ap.parse_args(argv)
    answers_dir = a.answers or a.run / "data/demo/answers"
    lines = [
        f"pseudo-label selection on {a.run} (answer key {answers_dir})",
        "",
        "| round | split | scheme | kept | precision | classes without any | per class min / median / max "
        "| worst class precision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in a.splits:
        answers = load_answers(answers_dir / f"{split}.txt")
        for rnd in a.rounds:
            lines += rows_for(a.run, rnd, split, answers)
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
