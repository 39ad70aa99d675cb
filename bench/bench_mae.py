"""MAE pre-training on the demo: the r0 ViT fine-tuned from scratch vs from the encoder
pre-trained on the demo's train + testa images (config/demo-mae.yaml), side by side.

    python bench/bench_mae.py                 # seeds 0 and 1 of the fine-tuning, ~6 min on 2 unshared cores
    python bench/bench_mae.py --seeds 0 --keep /tmp/mae-bench

Both arms run the real workflow (target results/r0/infer/vit_linear/testb.npy) in their own
working directory; the MAE arm pre-trains once and fine-tunes every seed from it. The seed
is the fine-tuning initialisation (head, and the whole ViT in the scratch arm), given by a
third overlay file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workflow import environment  # noqa: E402

from webfg.evaluate import accuracy, load_answers  # noqa: E402
from webfg.io import load_predictions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TARGET = "results/r0/infer/vit_linear/testb.npy"


def benchmark_s(path: Path) -> float:
    with path.open() as f:
        return float(next(csv.DictReader(f, delimiter="\t"))["s"])


def arm(workdir: Path, overlays: list[Path], seed: int) -> dict:
    # the demo's rounds train CNNs: r0 trains the ViT in both arms (config/demo-mae.yaml does so too)
    (workdir / "seed.yaml").write_text(
        f"models: {{vit_linear: {{seed: {seed}}}}}\nrounds: {{r0: {{models: [swin_arc, vit_linear]}}}}\n"
    )
    configs = [str(REPO / "config/demo.yaml"), *map(str, overlays), str(workdir / "seed.yaml")]
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(SNAKEMAKE),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "--cores",
            "2",
            TARGET,
            "--configfile",
            *configs,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wall = time.perf_counter() - t0
    answers = load_answers(workdir / "data/demo/answers/testb.txt")
    probs, rows, meta = load_predictions(workdir / TARGET, mmap=False)
    history = list(csv.DictReader((workdir / "results/r0/train/vit_linear.history.tsv").open(), delimiter="\t"))
    return {
        "wall_s": wall,
        "train_s": benchmark_s(workdir / "benchmarks/r0/train/vit_linear.tsv"),
        "val": meta["val_accuracy"],
        "testb": accuracy(rows, probs.argmax(1).tolist(), answers),
        "val_by_epoch": [round(float(h["val_accuracy"]), 3) for h in history],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--keep", help="working directory to keep (default: a temporary one)")
    a = p.parse_args()
    print(environment())
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(a.keep or tmp)
        results = {"scratch": [], "mae": []}
        for seed in a.seeds:
            for name, overlays in [("scratch", []), ("mae", [REPO / "config/demo-mae.yaml"])]:
                (base / name).mkdir(parents=True, exist_ok=True)
                r = arm(base / name, overlays, seed)
                results[name].append(r)
                print(
                    f"{name:8s} seed {seed}: val {r['val']:.3f} testb {r['testb']:.3f} "
                    f"(fine-tune {r['train_s']:.0f} s; val by epoch {r['val_by_epoch']})",
                    flush=True,
                )
        pre = base / "mae/results/pretrain/vit_mae.history.tsv"
        history = list(csv.DictReader(pre.open(), delimiter="\t"))
        pre_s = benchmark_s(base / "mae/benchmarks/pretrain/vit_mae.tsv")
        n_images = (base / "mae/results/clean/train.txt").read_text().count("\n") + (
            base / "mae/results/clean/testa.txt"
        ).read_text().count("\n")
        print(
            f"MAE pre-training: {len(history)} epochs on {n_images} images in {pre_s:.0f} s "
            f"({float(history[-1]['images_per_s']):.0f} img/s), loss {float(history[0]['train_loss']):.3f} -> "
            f"{float(history[-1]['train_loss']):.3f}"
        )
        print("| start | seeds | val accuracy | testb accuracy | fine-tune s |\n|---|---|---|---|---|")
        for name, rs in results.items():
            cells = []
            for key in ["val", "testb"]:
                values = [r[key] for r in rs]
                cells.append(f"{sum(values) / len(values):.3f} ({' '.join(f'{v:.3f}' for v in values)})")
            train_s = sum(r["train_s"] for r in rs) / len(rs)
            print(f"| {name} | {' '.join(map(str, a.seeds))} | {cells[0]} | {cells[1]} | {train_s:.0f} |")
        print(json.dumps(results))


if __name__ == "__main__":
    main()
