"""Train one model on one split list: the whole loop, top to bottom.

Scale-out: one process per GPU under torchrun or srun (webfg.distributed), DDP with
sharded sampling, gradient accumulation to keep the recipe's global batch on fewer GPUs,
bf16/fp16 autocast (the margin head stays fp32), optional channels_last/torch.compile.

The loop itself is ``webfg.engine.Engine`` (updates, accumulation, autocast, signals,
mid-epoch checkpoints) over ``webfg.checkpoint`` (state files, fingerprint, resume);
this module builds the pieces and runs the epochs. Resumable: after every epoch (and
every ``checkpoint_every`` updates) the full training state is written atomically to
``state_dir/last.pt`` (plus each epoch's weights for the soup, ``webfg.soup``), and a
resumed run ends with the same weights as an uninterrupted one. SIGUSR1/SIGTERM/SIGINT
save at the next update and exit 75/143/130; under Slurm SIGUSR1 also requeues the job.
``state_dir`` must lie outside the declared outputs, since Snakemake deletes those
before a job runs. Once the final model is written the state is removed.

    webfg train --config model.yaml --root data/demo --train-list train.txt \
        --val-list val.txt --num-classes 30 --out model.pt
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from webfg import distributed
from webfg.checkpoint import (  # noqa: F401 - re-exported: the long-standing import path
    PREEMPT_EXIT,
    Preempted,
    StopFlag,
    fingerprint,
    load_checkpoint,
    load_resumable,
    save_torch,
)
from webfg.config import ModelConfig
from webfg.data import EpochSampler, ImageList, SeededImageList, eval_transform, train_transform
from webfg.engine import (  # noqa: F401 - re-exported
    Engine,
    autocast,
    evaluate,
    head_lr,
    loader_workers,
    make_loader,
    resolve_accumulation,
    resolve_precision,
    threads_per_process,
)
from webfg.heads import SoftmaxEQL
from webfg.io import InputError, read_split_list, read_yaml, write_text
from webfg.layout import history_of, state_dir_of
from webfg.model import Classifier
from webfg.soup import soup


def load_model(path) -> Classifier:
    """Rebuild the trained model from its final checkpoint."""
    ckpt = load_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(json.loads(ckpt["config"]), where=str(path))
        model = Classifier(cfg, int(ckpt["num_classes"]), ckpt["state_dict"]["class_counts"], load_pretrained=False)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise InputError(f"{path}: does not match a webfg model ({e})") from None
    return model.eval()


def build_optimizer(model: Classifier, cfg: ModelConfig, lr: float):
    """AdamW; no weight decay on norms, biases and position tables; optional layer decay."""
    from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay

    backbone = model.backbone
    no_decay = set(getattr(backbone, "no_weight_decay", lambda: set())())
    if cfg.layer_decay:
        groups = param_groups_layer_decay(backbone, cfg.weight_decay, no_decay, cfg.layer_decay)
    else:
        groups = param_groups_weight_decay(backbone, cfg.weight_decay, no_decay)
    if model.head is not None:
        groups.append({"params": list(model.head.parameters()), "weight_decay": cfg.weight_decay})
    return create_optimizer_v2(groups, opt="adamw", lr=lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer,
    epochs: int,
    warmup_epochs: float,
    lr: float,
    warmup_lr_ratio: float,
    min_lr: float,
    updates_per_epoch: int,
):
    """Cosine with linear warm-up, stepped every update."""
    from timm.scheduler import create_scheduler_v2

    return create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=epochs,
        warmup_epochs=warmup_epochs,
        warmup_lr=lr * warmup_lr_ratio,
        min_lr=min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )[0]


def build_loss(cfg: ModelConfig, num_classes: int, device):
    """(loss_fn(net, x, y), criterion): the recipe's loss for the head, mixup applied inside."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    use_mixup = cfg.head == "linear" and (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0)
    if cfg.head == "arcface":
        criterion = SoftmaxEQL(num_classes, tau=cfg.eql_tau) if cfg.eql_tau is not None else torch.nn.CrossEntropyLoss()
    elif use_mixup:
        criterion = SoftTargetCrossEntropy()
    elif cfg.label_smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    criterion = criterion.to(device)
    if use_mixup:
        mixup = Mixup(
            mixup_alpha=cfg.mixup_alpha,
            cutmix_alpha=cfg.cutmix_alpha,
            label_smoothing=cfg.label_smoothing,
            num_classes=num_classes,
        )

        def loss_fn(net, x, y):
            x, target = mixup(x, y)
            return criterion(net(x), target)
    elif cfg.head == "arcface":

        def loss_fn(net, x, y):
            return criterion(net(x, y), y)
    else:

        def loss_fn(net, x, y):
            return criterion(net(x), y)

    return loss_fn, criterion


def wrap(model, env, device, compile: bool = False):
    """DDP across ranks, then torch.compile if asked."""
    net = model
    if env.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(net) if compile else net


def train(
    cfg: ModelConfig,
    data_root,
    train_list,
    val_list,
    num_classes: int,
    out_path,
    state_dir=None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Train, soup, and write ``out_path`` (final weights) and ``<out>.history.tsv``.

    Runs as one of several processes when launched by torchrun or srun (see
    webfg.distributed); only rank 0 writes. Returns the final model's metadata.
    """
    out_path = Path(out_path)
    state_dir = Path(state_dir) if state_dir else state_dir_of(out_path)
    # ---- everything that can be wrong with the input fails here, before any compute
    train_samples = read_split_list(train_list, num_classes)
    val_samples = read_split_list(val_list, num_classes)
    if not train_samples:
        raise InputError(f"{train_list}: no training samples")
    if cfg.pretrained_file and not Path(cfg.pretrained_file).is_file():
        raise InputError(f"pretrained_file {cfg.pretrained_file}: no such file")
    accum = resolve_accumulation(cfg, distributed.detect().world_size)
    env = distributed.init()
    device = distributed.device_for(env)
    cpus = threads_per_process(threads, env.world_size)
    if cpus:
        torch.set_num_threads(cpus)
    workers = loader_workers(cfg.num_workers, cpus, device)
    if not env.is_main:
        log = lambda msg: None  # noqa: E731 - one voice in the log

    # ---- the pieces
    class_counts = np.bincount([y for _, y in train_samples], minlength=num_classes)
    effective_batch = cfg.batch_size * env.world_size * accum
    lr = cfg.base_lr * effective_batch / 1024
    torch.manual_seed(cfg.seed)
    model = Classifier(cfg, num_classes, class_counts).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg, lr)
    amp_dtype = resolve_precision(cfg.precision, device)
    loss_fn, criterion = build_loss(cfg, num_classes, device)
    use_mixup = cfg.head == "linear" and (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0)
    train_set = SeededImageList(data_root, train_samples, train_transform(cfg))
    sampler = EpochSampler(len(train_set), cfg.batch_size, cfg.seed, env.rank, env.world_size, drop_last=use_mixup)
    if sampler.batches_per_epoch == 0:
        raise InputError(
            f"{train_list}: {len(train_set)} samples is less than one batch of "
            f"{cfg.batch_size} per process x {env.world_size} processes"
        )
    val_set = ImageList(data_root, val_samples[env.rank :: env.world_size], eval_transform(cfg))
    val_loader = make_loader(val_set, 256, workers, device)
    engine = Engine(
        model=model,
        net=wrap(model, env, device, cfg.compile),
        optimizer=optimizer,
        scheduler=build_scheduler(
            optimizer,
            cfg.epochs,
            cfg.warmup_epochs,
            lr,
            cfg.warmup_lr_ratio,
            cfg.min_lr,
            -(-sampler.batches_per_epoch // accum),
        ),
        loader=make_loader(train_set, cfg.batch_size, workers, device, sampler),
        sampler=sampler,
        loss_fn=loss_fn,
        device=device,
        amp_dtype=amp_dtype,
        accum=accum,
        env=env,
        seed=cfg.seed,
        state_dir=state_dir,
        fingerprint=fingerprint(cfg, train_list, str(num_classes)),
        criterion=criterion if isinstance(criterion, SoftmaxEQL) else None,
        channels_last=cfg.channels_last,
        checkpoint_every=cfg.checkpoint_every,
        log=log,
    )
    engine.resume()

    # ---- the epochs (signal handlers first: once the start line is logged, a signal saves and exits
    # cleanly; one after the last update lets the final model be written)
    with engine.stop_signals():
        log(
            f"{cfg.arch}/{cfg.head}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
            f"{len(train_set)} train / {len(val_samples)} val images, {num_classes} classes, "
            f"{env.world_size} process(es) on {device.type} ({env.launcher}), batch {cfg.batch_size} x "
            f"{env.world_size} x accum {accum} = {effective_batch}, lr {lr:.2e}, {engine.updates_per_epoch} "
            f"updates/epoch, precision {str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}, "
            f"threads {torch.get_num_threads()}, loader workers {workers}"
        )
        t_start = time.time()
        for epoch in range(engine.epoch, cfg.epochs):
            engine.train_one_epoch(epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}")
            loss, seen, speed = engine.epoch_totals()
            val_acc = evaluate(model, val_loader, device, amp_dtype)
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} val_acc {val_acc:.4f} {speed:.0f} img/s")
            if env.is_main:
                save_torch(model.state_dict(), state_dir / f"epoch_{epoch + 1:04d}.pt")
                (state_dir / f"epoch_{epoch + 1 - cfg.soup_last:04d}.pt").unlink(missing_ok=True)
            engine.end_epoch(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss,
                    "val_accuracy": val_acc,
                    "head_lr": head_lr(optimizer),
                    "images_per_s": speed,
                    "data_wait": round(engine.data_wait(), 4),
                }
            )

        # ---- soup of the last epochs, final write
        first = max(1, cfg.epochs - cfg.soup_last + 1)
        souped = soup(state_dir / f"epoch_{e:04d}.pt" for e in range(first, cfg.epochs + 1))
        model.load_state_dict(souped)
        val_acc = evaluate(model, val_loader, device, amp_dtype)
        log(f"soup of epochs {first}..{cfg.epochs}: val_acc {val_acc:.4f} ({time.time() - t_start:.0f}s this run)")
        meta = {
            "val_accuracy": val_acc,
            "epochs": cfg.epochs,
            "soup_epochs": [first, cfg.epochs],
            "num_train": len(train_samples),
            "num_val": len(val_samples),
            "world_size": env.world_size,
            "effective_batch": effective_batch,
        }
        if env.is_main:
            write_history(history_of(out_path), engine.history)
            save_torch(
                {
                    "state_dict": {k: v.cpu() for k, v in souped.items()},
                    "config": json.dumps(cfg.to_dict()),
                    "num_classes": num_classes,
                    "meta": json.dumps(meta),
                },
                out_path,
            )
            shutil.rmtree(state_dir, ignore_errors=True)
        distributed.barrier()
        return meta


def write_history(path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def load_model_config(path) -> ModelConfig:
    """A model entry from a YAML file (duplicate keys and syntax errors name the line)."""
    return ModelConfig.from_dict(read_yaml(path) or {}, where=str(path))
