"""GPU smoke benchmark of the full-scale path, through webfg's own trainer, MAE and inference.

    make gpu-smoke                          # every local GPU: torchrun over them, NCCL
    python bench/gpu_smoke.py --steps 300   # the same by hand
    python bench/gpu_smoke.py --tiny        # the same code on tiny models, on the CPU (does it run?)

On the GPUs it finds it runs, each through the code the pipeline runs (webfg.train.train,
webfg.mae.pretrain, webfg.infer.predict_probs), with the full plan's model entries
(config/config.yaml, without their pre-trained files):

- ViT-L/16 at 448 with the linear head (models.vit_l_ce: Mixup/CutMix, layer decay) and
  Swin-V2-B at 384 with the ArcFace head (models.swinv2_b_arc: SoftmaxEQL), each for
  ``--steps`` updates per GPU, bf16 autocast, channels_last, DDP over all local GPUs
  (NCCL), loader workers derived from the CPUs (``cpus_per_gpu - 1``; webfg.engine);
- MAE pre-training steps of the ViT-L/16 encoder at 224 (MAE's recipe);
- flip-TTA inference at batch 256 with the trained ViT-L (one GPU, as infer_probs).

The images are synthetic web-photo-like JPEGs (500x375, bench_dataloader.make_jpegs),
decoded and augmented with the recipe's transforms (RandAugment, random erasing), so the
loader does the work it does on the real data. Printed and written to bench/results/:
images/s per GPU, the share of step time spent waiting for data (the slowest rank's),
peak GPU memory, and MFU = images/s x FLOPs per image (fwd + bwd, counted by
torch.utils.flop_counter on the model itself) / the GPU's dense bf16 peak (table below,
by device name). The images/s include the first steps (warm-up, cuDNN autotuning):
with a few hundred steps that costs a few percent.

On a machine without a CUDA GPU it prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# dense bf16 tensor-core peaks (no sparsity), FLOP/s; the first name found in the device name wins
PEAK_BF16 = [
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A6000", 155e12),
    ("A40", 150e12),
    ("A30", 165e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
]


def peak_bf16(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16 if name in device_name), None)


def full_cases() -> dict:
    """The plan's model entries, as the pipeline trains them, minus pre-trained files."""
    import yaml

    plan = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]
    cases = {}
    for name in ("vit_l_ce", "swinv2_b_arc"):
        entry = {k: v for k, v in plan[name].items() if k not in ("resources", "pretrained_file")}
        cases[name] = {
            **entry,
            "precision": "bf16",
            "channels_last": True,
            "epochs": 1,
            "warmup_epochs": 0,
            "soup_last": 1,
            "_cpus_per_gpu": plan[name]["resources"]["cpus_per_gpu"],
        }
    mae = {
        "arch": "vit_large_patch16_224",
        "img_size": 224,
        "batch_size": 64,
        "epochs": 1,
        "warmup_epochs": 0,
        "precision": "bf16",
    }
    return {"train": cases, "mae": mae, "classes": 5000, "infer_batch": 256}


def tiny_cases() -> dict:
    """config/tiny.yaml's models and a tiny MAE: the same code paths, seconds on a CPU."""
    import yaml

    plan = yaml.safe_load((REPO / "config/tiny.yaml").read_text())["models"]
    cases = {n: {**e, "epochs": 1, "soup_last": 1, "_cpus_per_gpu": 1} for n, e in plan.items()}
    mae = {
        "arch": "vit_tiny_r_s16_p8_224",
        "arch_kwargs": {"img_size": 32, "patch_size": 2, "depth": 2},
        "img_size": 32,
        "batch_size": 16,
        "epochs": 1,
        "warmup_epochs": 0,
        "decoder_dim": 32,
        "decoder_depth": 1,
        "decoder_heads": 2,
    }
    return {"train": cases, "mae": mae, "classes": 6, "infer_batch": 64}


def flops_per_image(model, img_size: int, device, arcface: bool, classes: int) -> float:
    """Forward + backward FLOPs of one image (batch of 2, halved), counted on the model itself."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, img_size, img_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        if arcface is None:  # MAE: its own loss, on a random mask drawn on the device
            loss = model(x, model.keep_from_noise(torch.rand(2, model.num_patches, device=device)))[0]
        else:
            out = model(x, torch.zeros(2, dtype=torch.long, device=device)) if arcface else model(x)
            loss = out.float().logsumexp(1).mean()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def write_lists(root: Path, samples: list, n: int, name: str, classes: int) -> Path:
    """A split list of ``n`` lines cycling through the images, labels folded into ``classes``."""
    lines = [f"{samples[i % len(samples)][0]} {samples[i % len(samples)][1] % classes}" for i in range(n)]
    path = root / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_rank(a) -> None:
    """One process per GPU (or the one CPU process of --tiny)."""
    import torch

    from webfg import distributed
    from webfg.config import MAEConfig, ModelConfig
    from webfg.engine import loader_workers
    from webfg.infer import predict_probs
    from webfg.mae import MaskedAutoencoder, pretrain
    from webfg.model import Classifier
    from webfg.train import load_model, train

    env = distributed.init()
    device = distributed.device_for(env)
    root = Path(a.data)
    samples = [(str(p.relative_to(root)), int(p.parent.name)) for p in sorted(root.glob("train/*/*.jpg"))]
    cases = tiny_cases() if a.tiny else full_cases()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_bf16(name) if device.type == "cuda" else None
    say = print if env.is_main else (lambda *args, **kw: None)
    results = {"device": name, "gpus": env.world_size, "peak_bf16_flops": peak, "steps": a.steps, "models": {}}
    out = Path(a.work)

    def mfu(images_per_s_per_gpu, flops):
        return images_per_s_per_gpu * flops / peak if peak else None

    for model_name, entry in cases["train"].items():
        entry = dict(entry)
        cpus = entry.pop("_cpus_per_gpu")
        if a.tiny:
            entry["precision"] = "fp32"
        cfg = ModelConfig.from_dict(entry, where=f"models.{model_name}")
        n = a.steps * cfg.batch_size * env.world_size
        train_list, val_list = out / f"{model_name}.train.txt", out / f"{model_name}.val.txt"
        if env.is_main:
            write_lists(out, samples, n, f"{model_name}.train", cases["classes"])
            write_lists(out, samples, 256, f"{model_name}.val", cases["classes"])
        distributed.barrier()
        flops = None
        if env.is_main:
            probe = Classifier(cfg, cases["classes"], torch.ones(cases["classes"]), load_pretrained=False).to(device)
            flops = flops_per_image(probe, cfg.img_size, device, cfg.head == "arcface", cases["classes"])
            del probe
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        train(
            cfg,
            root,
            train_list,
            val_list,
            cases["classes"],
            out / f"{model_name}.pt",
            threads=cpus * env.world_size if device.type == "cuda" else a.threads,
            log=say,
        )
        wall = time.perf_counter() - t0
        history = (out / f"{model_name}.history.tsv").read_text().splitlines() if env.is_main else []
        if env.is_main:
            row = dict(zip(history[0].split("\t"), history[1].split("\t")))
            per_gpu = float(row["images_per_s"]) / env.world_size
            results["models"][model_name] = {
                "arch": cfg.arch,
                "head": cfg.head,
                "img_size": cfg.img_size,
                "batch_per_gpu": cfg.batch_size,
                "loader_workers": loader_workers(cfg.num_workers, cpus if device.type == "cuda" else a.threads, device),
                "images_per_s_per_gpu": round(per_gpu, 1),
                "data_wait_share": float(row["data_wait"]),
                "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                if device.type == "cuda"
                else None,
                "train_gflops_per_image": round(flops / 1e9, 1),
                "mfu": mfu(per_gpu, flops),
                "wall_s": round(wall, 1),
            }
        distributed.barrier()

    # ---- MAE pre-training steps
    mcfg = MAEConfig.from_dict({**cases["mae"], **({"precision": "fp32"} if a.tiny else {})})
    n = a.steps * mcfg.batch_size * env.world_size
    lst = out / "mae.txt"
    if env.is_main:
        write_lists(out, samples, n, "mae", cases["classes"])
    distributed.barrier()
    flops = None
    if env.is_main:
        probe = MaskedAutoencoder(mcfg).to(device)
        flops = flops_per_image(probe, mcfg.img_size, device, None, 0)
        del probe
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    cpus = 8 if device.type == "cuda" else a.threads
    pretrain(
        mcfg, root, lst, [], out / "mae.pth", threads=cpus * env.world_size if device.type == "cuda" else cpus, log=say
    )
    if env.is_main:
        row = dict(zip(*[line.split("\t") for line in (out / "mae.history.tsv").read_text().splitlines()[:2]]))
        per_gpu = float(row["images_per_s"]) / env.world_size
        results["models"]["mae"] = {
            "arch": mcfg.arch,
            "img_size": mcfg.img_size,
            "batch_per_gpu": mcfg.batch_size,
            "images_per_s_per_gpu": round(per_gpu, 1),
            "data_wait_share": float(row["data_wait"]),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda"
            else None,
            "train_gflops_per_image": round(flops / 1e9, 1),
            "mfu": mfu(per_gpu, flops),
        }

    # ---- flip-TTA inference, one GPU (as infer_probs), batch 256
    if env.is_main:
        first = next(iter(cases["train"]))
        model = load_model(out / f"{first}.pt").to(device)
        rel = [samples[i % len(samples)][0] for i in range(a.infer_images)]
        predict_probs(model, root, rel[: cases["infer_batch"]], batch_size=cases["infer_batch"], log=lambda m: None)
        t0 = time.perf_counter()
        predict_probs(model, root, rel, batch_size=cases["infer_batch"], log=lambda m: None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        results["models"][f"{first}_infer_flip_tta"] = {
            "batch": cases["infer_batch"],
            "images_per_s_per_gpu": round(len(rel) / (time.perf_counter() - t0), 1),
        }
        report(results, a)
    distributed.barrier()
    distributed.shutdown()


def report(results: dict, a) -> None:
    sys.path.insert(0, str(HERE))
    from bench_workflow import environment

    results["environment"] = environment()
    print(results["environment"])
    print(f"{'model':28s} {'img/s/GPU':>10s} {'data wait':>10s} {'peak GiB':>9s} {'GFLOP/img':>10s} {'MFU':>6s}")
    for name, r in results["models"].items():
        mem, mfu = r.get("peak_memory_gib"), r.get("mfu")
        wait = r.get("data_wait_share")
        print(
            f"{name:28s} {r['images_per_s_per_gpu']:10.1f} {'' if wait is None else f'{wait:9.1%}':>10s} "
            f"{'' if mem is None else f'{mem:9.2f}':>9s} {r.get('train_gflops_per_image', ''):>10} "
            f"{'n/a' if mfu is None else f'{mfu:6.1%}':>6s}"
        )
    out = Path(a.results)
    out.mkdir(parents=True, exist_ok=True)
    tag = "tiny-cpu" if a.tiny else f"{results['device'].replace(' ', '_')}x{results['gpus']}"
    path = out / f"gpu_smoke-{tag}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="optimizer updates per GPU of each model")
    p.add_argument("--images", type=int, default=512, help="distinct synthetic JPEGs (reused)")
    p.add_argument("--infer-images", type=int, default=4096)
    p.add_argument("--tiny", action="store_true", help="config/tiny.yaml's models on the CPU: checks the script runs")
    p.add_argument("--threads", type=int, default=2, help="--tiny: CPU threads")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--data", help=argparse.SUPPRESS)  # set for the ranks by the launching process
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO / "src"))
    if a.data:  # a rank started by torchrun (or the single process)
        return run_rank(a)

    import torch

    if not a.tiny and not torch.cuda.is_available():
        print(
            f"gpu_smoke: skipped: no CUDA GPU on this machine (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); nothing measured, nothing written"
        )
        return
    if a.tiny:
        a.steps = min(a.steps, 10)
        a.images, a.infer_images = min(a.images, 64), min(a.infer_images, 256)
    sys.path.insert(0, str(HERE))
    from bench_dataloader import make_jpegs

    with tempfile.TemporaryDirectory(prefix="webfg-gpu-smoke-") as tmp:
        data, work = Path(tmp) / "data", Path(tmp) / "work"
        work.mkdir(parents=True)
        make_jpegs(data, a.images)  # --tiny too: its transforms crop them to 32 px
        argv = [*sys.argv[1:], "--data", str(data), "--work", str(work)]
        gpus = torch.cuda.device_count() if not a.tiny else 1
        if gpus > 1:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"]
            sys.exit(
                subprocess.run(
                    [*torchrun, __file__, *argv], env={**os.environ, "PYTHONPATH": str(REPO / "src")}
                ).returncode
            )
        a.data, a.work = str(data), str(work)
        run_rank(a)


if __name__ == "__main__":
    main()
