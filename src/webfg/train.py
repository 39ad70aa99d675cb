"""Train one model on one split list: the whole loop, top to bottom.

Scale-out: one process per GPU under torchrun or srun (webfg.distributed), DDP with
sharded sampling, gradient accumulation to keep the recipe's global batch on fewer GPUs,
bf16/fp16 autocast (the margin head stays fp32), optional channels_last/torch.compile.

Resumable: after every epoch (and every ``checkpoint_every`` updates) the full training
state is written atomically to ``state_dir/last.pt`` (plus each epoch's weights for the
soup). Every random draw derives from (seed, epoch, position), so the position is the
sampler's and the RNGs' state, and a resumed run ends with the same weights as an
uninterrupted one. SIGUSR1/SIGTERM (Slurm's pre-emption and time-limit warnings) save
at the next update and exit 75/143; under Slurm SIGUSR1 also requeues the job. A
restarted job continues as long as the config and the training list are unchanged (a
fingerprint guards this). ``state_dir`` must lie outside the declared outputs, since
Snakemake deletes those before a job runs. Once the final model is written the state
is removed.

    webfg train --config model.yaml --root data/demo --train-list train.txt \
        --val-list val.txt --num-classes 30 --out model.pt
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from webfg import distributed
from webfg.data import EpochSampler, ImageList, SeededImageList, eval_transform, seed_rngs, train_transform
from webfg.heads import SoftmaxEQL
from webfg.io import InputError, atomic_path, read_split_list, write_text
from webfg.config import ModelConfig
from webfg.model import Classifier
from webfg.progress import Progress


def fingerprint(cfg: ModelConfig, train_list, num_classes: int) -> str:
    h = hashlib.sha256(json.dumps(cfg.learning_dict(), sort_keys=True).encode())  # runtime knobs left out
    h.update(Path(train_list).read_bytes())
    h.update(str(num_classes).encode())
    return h.hexdigest()


def save_torch(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_resumable(state_dir: Path, fp: str, log=print, is_main: bool = True) -> dict | None:
    """``state_dir/last.pt`` if it was saved for this fingerprint; a stale state is removed."""
    last = Path(state_dir) / "last.pt"
    if not last.exists():
        return None
    state = load_checkpoint(last)
    if state.get("fingerprint") == fp:
        return state
    log(f"ignoring {state_dir}: it belongs to another config or training list")
    distributed.barrier()
    if is_main:
        shutil.rmtree(state_dir)
    return None


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


@torch.no_grad()
def evaluate(model: Classifier, loader, device=torch.device("cpu"), amp_dtype=None) -> float:
    """Top-1 accuracy; each rank scores its shard of the val list and the counts are summed."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            correct += (model.predict_logits(x).argmax(1) == y).sum().item()
        total += len(y)
    correct, total = distributed.all_reduce_sum(correct, total, device=device)
    return correct / max(total, 1)


def soup(state_dicts) -> dict:
    """Uniform model soup: element-wise mean of floating tensors; others from the last."""
    out = {}
    for key, last in state_dicts[-1].items():
        if last.is_floating_point():
            out[key] = torch.stack([sd[key].float() for sd in state_dicts]).mean(0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


class Preempted(SystemExit):
    """Raised after the state is saved on SIGUSR1/SIGTERM; its code is the process's exit code."""


PREEMPT_EXIT = {signal.SIGUSR1: 75, signal.SIGTERM: 143}  # 75: EX_TEMPFAIL, 143: 128 + SIGTERM


class StopFlag:
    """Remembers the first SIGUSR1/SIGTERM; the loop checks it at update boundaries."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def install(self) -> "StopFlag":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPT_EXIT:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def resolve_precision(name: str, device: torch.device):
    """The autocast dtype, or None for fp32. auto: bf16 on GPUs that support it."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def resolve_accumulation(cfg: ModelConfig, world_size: int, where: str = "model config") -> int:
    """Micro-batches per optimizer update, so that the recipe's global batch is kept on fewer GPUs."""
    if cfg.global_batch_size is None:
        return cfg.grad_accum
    per_update = cfg.batch_size * world_size
    if cfg.global_batch_size % per_update:
        raise InputError(f"{where}.global_batch_size: {cfg.global_batch_size} is not a multiple of batch_size "
                         f"{cfg.batch_size} x world size {world_size} = {per_update}")
    return cfg.global_batch_size // per_update


def step_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def _threads_per_process(threads: int | None, world_size: int) -> int | None:
    import os

    if not threads:
        return None
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_STEP_TASKS_PER_NODE", "").split("(")[0]
    return max(1, threads // int(local or world_size))


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
    state_dir = Path(state_dir) if state_dir else out_path.with_suffix(".state")
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
    per_process = _threads_per_process(threads, env.world_size)
    if per_process:
        torch.set_num_threads(per_process)
    if not env.is_main:
        log = lambda msg: None  # noqa: E731 - one voice in the log
    class_counts = np.bincount([y for _, y in train_samples], minlength=num_classes)
    effective_batch = cfg.batch_size * env.world_size * accum
    lr = cfg.base_lr * effective_batch / 1024

    torch.manual_seed(cfg.seed)
    model = Classifier(cfg, num_classes, class_counts).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg, lr)
    amp_dtype = resolve_precision(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    use_mixup = cfg.head == "linear" and (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0)
    train_set = SeededImageList(data_root, train_samples, train_transform(cfg))
    sampler = EpochSampler(len(train_set), cfg.batch_size, cfg.seed, env.rank, env.world_size, drop_last=use_mixup)
    micro_steps = sampler.batches_per_epoch
    if micro_steps == 0:
        raise InputError(f"{train_list}: {len(train_set)} samples is less than one batch of "
                         f"{cfg.batch_size} per process x {env.world_size} processes")
    updates_per_epoch = -(-micro_steps // accum)
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=lr * cfg.warmup_lr_ratio,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    if cfg.head == "arcface":
        criterion = SoftmaxEQL(num_classes, tau=cfg.eql_tau) if cfg.eql_tau is not None else torch.nn.CrossEntropyLoss()
    elif use_mixup:
        criterion = SoftTargetCrossEntropy()
    elif cfg.label_smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    criterion = criterion.to(device)
    mixup = (
        Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha,
              label_smoothing=cfg.label_smoothing, num_classes=num_classes)
        if use_mixup else None
    )
    loader_kwargs = dict(num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                         persistent_workers=cfg.num_workers > 0)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, **loader_kwargs)
    val_loader = torch.utils.data.DataLoader(
        ImageList(data_root, val_samples[env.rank::env.world_size], eval_transform(cfg)), batch_size=256,
        shuffle=False, **loader_kwargs,
    )
    net = model
    if env.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    # ---- resume: from the end of an epoch, or from an update inside one
    fp = fingerprint(cfg, train_list, num_classes)
    start_epoch, start_step, history = 0, 0, []
    loss_sum = seen = train_s = 0.0
    last = state_dir / "last.pt"
    state = load_resumable(state_dir, fp, log, env.is_main)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if isinstance(criterion, SoftmaxEQL):
            criterion.load_state_dict(state["criterion"])
        start_epoch, start_step, history = state["epoch"], state["step"], json.loads(state["history"])
        loss_sum, seen, train_s = state["loss_sum"], state["seen"], state["train_s"]
        log(f"resumed from {last} at epoch {start_epoch + 1} step {start_step}/{micro_steps}")
    distributed.barrier()
    if env.is_main:
        state_dir.mkdir(parents=True, exist_ok=True)

    def save_state(epoch: int, step: int) -> None:
        """Everything needed to continue at micro-step ``step`` of ``epoch`` (RNG streams derive from it)."""
        if env.is_main:
            save_torch({
                "fingerprint": fp, "epoch": epoch, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "criterion": criterion.state_dict() if isinstance(criterion, SoftmaxEQL) else {},
                "history": json.dumps(history), "loss_sum": loss_sum, "seen": seen, "train_s": train_s,
            }, last)
        distributed.barrier()

    # handlers first: once the start line is logged, SIGUSR1/SIGTERM save and exit cleanly
    stop = StopFlag().install()
    log(f"{cfg.arch}/{cfg.head}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"{len(train_set)} train / {len(val_samples)} val images, {num_classes} classes, "
        f"{env.world_size} process(es) on {device.type} ({env.launcher}), batch {cfg.batch_size} x "
        f"{env.world_size} x accum {accum} = {effective_batch}, lr {lr:.2e}, {updates_per_epoch} updates/epoch, "
        f"precision {str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}, threads {torch.get_num_threads()}")
    t_start = time.time()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch, start_step)
            model.train()
            t0 = time.time()
            bar = Progress(total=len(sampler) * env.world_size, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           unit="img") if env.is_main else None
            for step, (x, y) in enumerate(train_loader, start=start_step):
                # a step's RNG draws (mixup, drop-path) depend only on its position
                seed = step_seed(cfg.seed, epoch, step, env.rank)
                seed_rngs(seed, device)
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                group = step // accum
                group_steps = range(group * accum, min((group + 1) * accum, micro_steps))
                is_update = step == group_steps[-1]
                if step % accum == 0:
                    scheduler.step_update(epoch * updates_per_epoch + group)
                sync = contextlib.nullcontext() if is_update or not env.enabled else net.no_sync()
                with sync:
                    with autocast(device, amp_dtype):
                        if mixup is not None:
                            x, target = mixup(x, y)
                            loss = criterion(net(x), target)
                        elif cfg.head == "arcface":
                            loss = criterion(net(x, y), y)
                        else:
                            loss = criterion(net(x), y)
                    # the update's gradient is the mean over all its images, however they were split
                    share = len(y) / sum(sampler.batch_len(i) for i in group_steps)
                    scaler.scale(loss * share).backward()
                loss_sum += loss.item() * len(y)
                seen += len(y)
                if bar is not None:
                    bar.update(len(y) * env.world_size)
                if not is_update:
                    continue
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                done = step + 1
                signalled = distributed.all_reduce_sum(stop.signum, device=device)[0] if env.enabled else stop.signum
                if signalled or (cfg.checkpoint_every and (group + 1) % cfg.checkpoint_every == 0
                                 and done < micro_steps):
                    train_s += time.time() - t0
                    t0 = time.time()
                    save_state(epoch, done)
                if signalled:
                    signum = stop.signum or signal.SIGTERM
                    log(f"{signal.Signals(signum).name}: saved {last} at epoch {epoch + 1} step {done}; exiting")
                    request_requeue(env, signum, log)
                    raise Preempted(PREEMPT_EXIT[signum])
            if bar is not None:
                bar.close()
            start_step = 0
            train_s += time.time() - t0
            total_loss, total_seen = distributed.all_reduce_sum(loss_sum, seen, device=device)
            val_acc = evaluate(model, val_loader, device, amp_dtype)
            history.append({"epoch": epoch + 1, "train_loss": total_loss / total_seen, "val_accuracy": val_acc,
                            "lr": optimizer.param_groups[0]["lr"], "images_per_s": total_seen / max(train_s, 1e-9)})
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {total_loss / total_seen:.4f} val_acc {val_acc:.4f} "
                f"{total_seen / max(train_s, 1e-9):.0f} img/s")
            loss_sum = seen = train_s = 0.0
            if env.is_main:
                save_torch(model.state_dict(), state_dir / f"epoch_{epoch + 1:04d}.pt")
                (state_dir / f"epoch_{epoch + 1 - cfg.soup_last:04d}.pt").unlink(missing_ok=True)
            save_state(epoch + 1, 0)
        first = max(1, cfg.epochs - cfg.soup_last + 1)
        souped = soup([load_checkpoint(state_dir / f"epoch_{e:04d}.pt") for e in range(first, cfg.epochs + 1)])
        model.load_state_dict(souped)
        val_acc = evaluate(model, val_loader, device, amp_dtype)
        log(f"soup of epochs {first}..{cfg.epochs}: val_acc {val_acc:.4f} ({time.time() - t_start:.0f}s this run)")
        meta = {"val_accuracy": val_acc, "epochs": cfg.epochs, "soup_epochs": [first, cfg.epochs],
                "num_train": len(train_samples), "num_val": len(val_samples), "world_size": env.world_size,
                "effective_batch": effective_batch}
        if env.is_main:
            write_history(out_path.with_suffix(".history.tsv"), history)
            save_torch({"state_dict": {k: v.cpu() for k, v in souped.items()}, "config": json.dumps(cfg.to_dict()),
                        "num_classes": num_classes, "meta": json.dumps(meta)}, out_path)
            shutil.rmtree(state_dir, ignore_errors=True)
        distributed.barrier()
        return meta
    finally:
        stop.restore()  # a signal after the last update lets the final model be written


def request_requeue(env, signum: int, log) -> None:
    """On SIGUSR1 (Slurm's warning before the time limit) put the job back in the queue."""
    import os
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if signum != signal.SIGUSR1 or not job or not env.is_main:
        return
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=60, capture_output=True, text=True)
        log(f"requeued Slurm job {job}")
    except (OSError, subprocess.SubprocessError) as e:
        log(f"could not requeue Slurm job {job}: {e}")


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
