"""Train one model on one split list: the whole loop, top to bottom.

Resumable: after every epoch the full training state is written atomically to
``state_dir/last.pt`` (plus that epoch's weights for the soup). A restarted job
(Slurm requeue, Ctrl-C, a crash) continues from there, as long as the config and
the training list are unchanged (a fingerprint guards this). ``state_dir`` must lie
outside the declared outputs, since Snakemake deletes those before a job runs. Once
the final (souped) model is written the state is removed.

    webfg train --config model.yaml --root data/demo --train-list train.txt \
        --val-list val.txt --num-classes 30 --out model.pt
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from webfg.data import ImageList, eval_transform, train_transform
from webfg.heads import SoftmaxEQL
from webfg.io import InputError, atomic_path, read_split_list, write_text
from webfg.config import ModelConfig
from webfg.model import Classifier


def fingerprint(cfg: ModelConfig, train_list, num_classes: int) -> str:
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(Path(train_list).read_bytes())
    h.update(str(num_classes).encode())
    return h.hexdigest()


def save_torch(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path) -> dict:
    """Load a webfg checkpoint: tensors and plain containers only (weights_only=True)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError, EOFError ...
        raise InputError(f"{path}: not a loadable webfg checkpoint ({type(e).__name__}: {e})") from None


def load_model(path) -> Classifier:
    """Rebuild the trained model from its final checkpoint."""
    ckpt = load_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(json.loads(ckpt["config"]), where=str(path))
        model = Classifier(cfg, int(ckpt["num_classes"]), ckpt["state_dict"]["class_counts"])
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


@torch.no_grad()
def evaluate(model: Classifier, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model.predict_logits(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)


def soup(state_dicts: list[dict]) -> dict:
    """Uniform model soup: element-wise mean of floating tensors; others from the last."""
    out = {}
    for key, last in state_dicts[-1].items():
        if last.is_floating_point():
            out[key] = torch.stack([sd[key].float() for sd in state_dicts]).mean(0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


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

    Returns the final model's metadata (val accuracy, epochs, images/s).
    """
    if threads:
        torch.set_num_threads(threads)
    out_path = Path(out_path)
    state_dir = Path(state_dir) if state_dir else out_path.with_suffix(".state")
    train_samples = read_split_list(train_list, num_classes)
    val_samples = read_split_list(val_list, num_classes)
    if not train_samples:
        raise InputError(f"{train_list}: no training samples")
    class_counts = np.bincount([y for _, y in train_samples], minlength=num_classes)
    world_lr = cfg.base_lr * cfg.batch_size / 1024

    torch.manual_seed(cfg.seed)
    model = Classifier(cfg, num_classes, class_counts)
    optimizer = build_optimizer(model, cfg, world_lr)
    use_mixup = cfg.head == "linear" and (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0)
    train_set = ImageList(data_root, train_samples, train_transform(cfg))
    steps_per_epoch = len(train_set) // cfg.batch_size if use_mixup else -(-len(train_set) // cfg.batch_size)
    if steps_per_epoch == 0:
        raise InputError(f"{train_list}: {len(train_set)} samples is less than one batch of {cfg.batch_size}")
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=world_lr * cfg.warmup_lr_ratio,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    if cfg.head == "arcface":
        criterion = SoftmaxEQL(num_classes, tau=cfg.eql_tau) if cfg.eql_tau is not None else torch.nn.CrossEntropyLoss()
    elif use_mixup:
        criterion = SoftTargetCrossEntropy()
    elif cfg.label_smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    mixup = (
        Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha,
              label_smoothing=cfg.label_smoothing, num_classes=num_classes)
        if use_mixup else None
    )
    val_loader = torch.utils.data.DataLoader(
        ImageList(data_root, val_samples, eval_transform(cfg)), batch_size=256, shuffle=False
    )

    # ---- resume
    fp = fingerprint(cfg, train_list, num_classes)
    start_epoch, history = 0, []
    last = state_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        if state.get("fingerprint") == fp:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if isinstance(criterion, SoftmaxEQL):
                criterion.load_state_dict(state["criterion"])
            start_epoch, history = state["epoch"] + 1, json.loads(state["history"])
            log(f"resumed from {last} after epoch {start_epoch}")
        else:
            log(f"ignoring {state_dir}: it belongs to another config or training list")
            shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)

    log(f"{cfg.arch}/{cfg.head}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"{len(train_set)} train / {len(val_samples)} val images, {num_classes} classes, "
        f"lr {world_lr:.2e}, {steps_per_epoch} steps/epoch, threads {torch.get_num_threads()}")
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        # per-epoch seeds make a resumed run draw the same batches, augmentations
        # (timm uses python's and numpy's global RNGs) and drop-path masks
        epoch_seed = cfg.seed * 100_003 + epoch
        g = torch.Generator().manual_seed(epoch_seed)
        random.seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        torch.manual_seed(epoch_seed)
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=use_mixup
        )
        model.train()
        t0, loss_sum, seen = time.time(), 0.0, 0
        for step, (x, y) in enumerate(loader):
            scheduler.step_update(epoch * steps_per_epoch + step)
            if mixup is not None:
                x, target = mixup(x, y)
                loss = criterion(model(x), target)
            elif cfg.head == "arcface":
                loss = criterion(model(x, y), y)
            else:
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
        train_s = time.time() - t0
        val_acc = evaluate(model, val_loader)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "val_accuracy": val_acc,
                        "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / train_s})
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.4f} val_acc {val_acc:.4f} "
            f"{seen / train_s:.0f} img/s")
        save_torch(model.state_dict(), state_dir / f"epoch_{epoch + 1:04d}.pt")
        stale = state_dir / f"epoch_{epoch + 1 - cfg.soup_last:04d}.pt"
        stale.unlink(missing_ok=True)
        save_torch({
            "fingerprint": fp, "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "criterion": criterion.state_dict() if isinstance(criterion, SoftmaxEQL) else {},
            "history": json.dumps(history),
        }, last)

    first = max(1, cfg.epochs - cfg.soup_last + 1)
    souped = soup([load_checkpoint(state_dir / f"epoch_{e:04d}.pt") for e in range(first, cfg.epochs + 1)])
    model.load_state_dict(souped)
    val_acc = evaluate(model, val_loader)
    log(f"soup of epochs {first}..{cfg.epochs}: val_acc {val_acc:.4f} ({time.time() - t_start:.0f}s this run)")
    meta = {"val_accuracy": val_acc, "epochs": cfg.epochs, "soup_epochs": [first, cfg.epochs],
            "num_train": len(train_samples), "num_val": len(val_samples)}
    write_history(out_path.with_suffix(".history.tsv"), history)
    save_torch({"state_dict": souped, "config": json.dumps(cfg.to_dict()), "num_classes": num_classes,
                "meta": json.dumps(meta)}, out_path)
    shutil.rmtree(state_dir, ignore_errors=True)
    return meta


def write_history(path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def load_model_config(path) -> ModelConfig:
    import yaml

    with open(path, encoding="utf-8") as f:
        return ModelConfig.from_dict(yaml.safe_load(f) or {}, where=str(path))
