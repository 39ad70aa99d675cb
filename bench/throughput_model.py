"""The 17-model plan on paper: what each model needs from a GPU and from its loader, and its GPU-hours.

    python bench/throughput_model.py --per-worker-448 85 --per-worker-384 118

FLOPs per image are counted by torch.utils.flop_counter on the plan's own models
(config/config.yaml, built on the meta device: no weights, no compute), forward + backward
for training, two forwards (flip TTA) for inference, and the MAE encoder + decoder on 25 %
of the tokens for pre-training. A GPU at a stated MFU (default 40 % of an A100's 312 TFLOP/s
dense bf16) then trains ``MFU x peak / FLOPs`` images/s; the loader delivers per-worker
rate (measured by bench/bench_dataloader.py at the model's resolution with the real
augmentations) x the derived workers (``cpus_per_gpu - 1``). GPU-hours: epochs x images /
(images/s per GPU), summed over every training job of the plan, plus inference, the
training-set scoring of round r0, and MAE pre-training.

The image counts are the challenge's (5,000 classes; the training set size is an input,
``--train-images``, about 557,000 for WebiNat-5000) and the pseudo-label counts of SPEC A4.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]


def count(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def model_flops(entry: dict, classes: int) -> tuple[float, float]:
    """(training FLOPs per image: fwd + bwd, inference FLOPs per image: 2 fwd with flip TTA)."""
    from webfg.config import ModelConfig
    from webfg.model import Classifier

    cfg = ModelConfig.from_dict({k: v for k, v in entry.items() if k not in ("resources", "pretrained_file")})
    counts = torch.ones(classes)  # on the CPU: the margins are computed from it at construction
    with torch.device("meta"):
        model = Classifier(cfg, classes, counts, load_pretrained=False).to("meta")
        x = torch.empty(1, 3, cfg.img_size, cfg.img_size)

    def forward():
        if model.head is None:
            return model(x)
        # the ArcFace head's matrix product (its margin is element-wise); autocast has no meta device
        return model.head.cosine(model.backbone(x))

    def train_step():
        forward().float().sum().backward()

    def infer():
        with torch.no_grad():
            forward()

    return count(train_step), 2 * count(infer)


def mae_flops(arch: str, img_size: int) -> float:
    from webfg.config import MAEConfig
    from webfg.mae import MaskedAutoencoder

    with torch.device("meta"):
        mae = MaskedAutoencoder(MAEConfig.from_dict({"arch": arch, "img_size": img_size}))
        x = torch.empty(1, 3, img_size, img_size)
        keep = mae.keep_from_noise(torch.rand(1, mae.num_patches))
    return count(lambda: mae(x, keep)[0].backward())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mfu", type=float, default=0.40)
    p.add_argument("--peak", type=float, default=312e12, help="dense bf16 FLOP/s of the GPU (A100: 312e12)")
    p.add_argument("--per-worker-448", type=float, required=True, help="bench_dataloader.py train img/s per worker")
    p.add_argument("--per-worker-384", type=float, required=True)
    p.add_argument("--train-images", type=int, default=557_000)
    p.add_argument("--mae-epochs", type=int, default=1600)
    a = p.parse_args()

    plan = yaml.safe_load((REPO / "config/config.yaml").read_text())
    classes = plan["data"]["num_classes"]
    testa, testb, kept_a, kept_ab = 60_000, 90_000, 55_000, 55_000 + 78_458  # SPEC A1, A4
    val = int(a.train_images * plan["clean"]["val_fraction"])
    train = a.train_images - val
    gpu_rate = a.mfu * a.peak
    print(
        f"GPU: {a.peak / 1e12:.0f} TFLOP/s bf16 at {a.mfu:.0%} MFU; {train:,} training images after a "
        f"{plan['clean']['val_fraction']:.0%} val split; loader per worker: {a.per_worker_448:.0f} img/s at 448, "
        f"{a.per_worker_384:.0f} at 384"
    )
    print()
    print(
        "| model | px | train GFLOP/img | img/s per GPU needed | workers (cpus_per_gpu - 1) | loader img/s | "
        "loader / need | infer img/s per GPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rates = {}
    for name, entry in plan["models"].items():
        train_flops, infer_flops = model_flops(entry, classes)
        need = gpu_rate / train_flops
        workers = max(1, entry["resources"]["cpus_per_gpu"] - 1)
        per_worker = a.per_worker_448 if entry["img_size"] >= 448 else a.per_worker_384
        rates[name] = (need, gpu_rate / infer_flops, entry["epochs"])
        print(
            f"| {name} | {entry['img_size']} | {train_flops / 1e9:.0f} | {need:.0f} | {workers} | "
            f"{workers * per_worker:.0f} | {workers * per_worker / need:.1f}x | {gpu_rate / infer_flops:.0f} |"
        )

    # every training job of the plan, on its round's list
    hours = {"train": 0.0, "infer": 0.0}
    jobs = 0
    for spec in plan["rounds"].values():
        pseudo = spec.get("pseudo")
        images = train + (0 if not pseudo else kept_a if pseudo["splits"] == ["testa"] else kept_ab)
        for m in spec["models"]:
            need, infer_rate, epochs = rates[m]
            hours["train"] += epochs * images / need / 3600
            hours["infer"] += (val + testa + testb) / infer_rate / 3600
            jobs += 1
    hours["score r0 train"] = sum(train / rates[m][1] for m in plan["rounds"]["r0"]["models"]) / 3600
    mae = mae_flops("vit_large_patch16_224", 224)
    hours["MAE"] = a.mae_epochs * (a.train_images + testa) * mae / gpu_rate / 3600
    print()
    print(
        f"MAE ViT-L/16 at 224 (75 % masked): {mae / 1e9:.0f} GFLOP/img fwd + bwd, "
        f"{gpu_rate / mae:.0f} img/s per GPU at this MFU"
    )
    print(
        f"GPU-hours of the plan ({jobs} trainings): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in hours.items())
        + f"; total {sum(hours.values()):,.0f} (A100-hours at {a.mfu:.0%} MFU)"
    )


if __name__ == "__main__":
    main()
