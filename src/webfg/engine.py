"""The training engine under every loop (fine-tuning in webfg.train, MAE in webfg.mae).

``Engine`` turns micro-batches into optimizer updates: device placement, bf16/fp16
autocast with a GradScaler, gradient accumulation (``no_sync`` between DDP updates),
per-step RNG seeding, pre-emption (``webfg.checkpoint.StopFlag``) and mid-epoch
checkpoints. Its position (epoch, micro-step) plus the model/optimizer/scaler/criterion
state is the whole training state: every random draw derives from (seed, epoch,
position), so a resumed run ends with the same weights as an uninterrupted one.
The loops themselves only build the pieces and say what a step's loss is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from webfg import distributed
from webfg.checkpoint import PREEMPT_EXIT, Preempted, StopFlag, load_resumable, request_requeue, save_torch
from webfg.data import seed_rngs
from webfg.io import InputError
from webfg.progress import Progress


def autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def resolve_precision(name: str, device: torch.device):
    """The autocast dtype, or None for fp32. auto: bf16 on GPUs that support it."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def resolve_accumulation(cfg, world_size: int, where: str = "model config") -> int:
    """Micro-batches per optimizer update, so that the recipe's global batch is kept on fewer GPUs."""
    if cfg.global_batch_size is None:
        return cfg.grad_accum
    per_update = cfg.batch_size * world_size
    if cfg.global_batch_size % per_update:
        raise InputError(
            f"{where}.global_batch_size: {cfg.global_batch_size} is not a multiple of batch_size "
            f"{cfg.batch_size} x world size {world_size} = {per_update}"
        )
    return cfg.global_batch_size // per_update


def step_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def local_processes(world_size: int) -> int:
    """Training processes on this machine (torchrun's or srun's count; else the world size)."""
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_STEP_TASKS_PER_NODE", "").split("(")[0]
    return int(local or world_size)


def threads_per_process(threads: int | None, world_size: int) -> int | None:
    """The job's CPUs divided among its processes on this machine (None: torch's default)."""
    if not threads:
        return None
    return max(1, threads // local_processes(world_size))


def loader_workers(configured: int | None, cpus: int | None, device: torch.device) -> int:
    """Data-loading processes per training process.

    ``configured`` wins when set. Otherwise, on a GPU every CPU of the process's share but
    one (which drives the GPU) decodes and augments, at least one; on the CPU the model
    needs the cores itself, so images are loaded in the training process (0)."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return 0
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus - 1)


def make_loader(dataset, batch_size: int, workers: int, device: torch.device, sampler=None):
    """A DataLoader in the job's shape: pinned memory on GPUs, workers kept across epochs."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


@torch.no_grad()
def evaluate(model, loader, device=torch.device("cpu"), amp_dtype=None) -> float:
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


def head_lr(optimizer) -> float:
    """The schedule's lr: the largest group's (layer decay scales the backbone's groups down from it)."""
    return max(group["lr"] for group in optimizer.param_groups)


@dataclass
class RunningStats:
    """Sums over the current epoch's micro-steps (part of the saved state)."""

    loss_sum: float = 0.0
    seen: float = 0.0
    train_s: float = 0.0
    data_s: float = 0.0  # of train_s, the time spent waiting for the loader


class Engine:
    """One model's optimisation from a (resumable) position to the end of an epoch.

    ``loss_fn(net, x, y)`` is a step's loss on one micro-batch (run under autocast).
    ``criterion``, if it has state (SoftmaxEQL's accumulators), is saved and resumed with
    the model; if it has a ``loss_scale`` attribute it is told the GradScaler's scale
    before each backward, so that what it collects from gradients does not depend on it.
    """

    def __init__(
        self,
        *,
        model,
        net,
        optimizer,
        scheduler,
        loader,
        sampler,
        loss_fn,
        device,
        amp_dtype,
        accum: int,
        env,
        seed: int,
        state_dir,
        fingerprint: str,
        criterion=None,
        channels_last: bool = False,
        checkpoint_every: int = 0,
        log=print,
    ):
        self.model, self.net, self.optimizer, self.scheduler = model, net, optimizer, scheduler
        self.loader, self.sampler, self.loss_fn = loader, sampler, loss_fn
        self.device, self.amp_dtype, self.accum, self.env, self.seed = device, amp_dtype, accum, env, seed
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.criterion, self.channels_last, self.checkpoint_every, self.log = (
            criterion,
            channels_last,
            checkpoint_every,
            log,
        )
        self.state_dir, self.fingerprint = Path(state_dir), fingerprint
        self.micro_steps = sampler.batches_per_epoch
        self.updates_per_epoch = -(-self.micro_steps // accum)
        self.epoch, self.step, self.history = 0, 0, []
        self.stats = RunningStats()
        self.stop = StopFlag()

    @property
    def last(self) -> Path:
        return self.state_dir / "last.pt"

    # ---- state
    def state_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "criterion": self.criterion.state_dict() if self.criterion is not None else {},
            "history": json.dumps(self.history),
            "loss_sum": self.stats.loss_sum,
            "seen": self.stats.seen,
            "train_s": self.stats.train_s,
            "data_s": self.stats.data_s,
        }

    def resume(self) -> bool:
        """Continue from ``state_dir/last.pt`` if it belongs to this run; create the directory."""
        state = load_resumable(self.state_dir, self.fingerprint, self.log, self.env.is_main)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            if self.criterion is not None:
                self.criterion.load_state_dict(state["criterion"])
            self.epoch, self.step, self.history = state["epoch"], state["step"], json.loads(state["history"])
            self.stats = RunningStats(state["loss_sum"], state["seen"], state["train_s"], state.get("data_s", 0.0))
            self.log(f"resumed from {self.last} at epoch {self.epoch + 1} step {self.step}/{self.micro_steps}")
        distributed.barrier()
        if self.env.is_main:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        return state is not None

    def save(self) -> None:
        """Everything needed to continue at micro-step ``self.step`` of ``self.epoch``."""
        if self.env.is_main:
            save_torch(self.state_dict(), self.last)
        distributed.barrier()

    # ---- signals
    @contextlib.contextmanager
    def stop_signals(self):
        """SIGUSR1/SIGTERM/SIGINT save at the next update inside; restored on the way out, so a
        signal after the last update lets the final model be written."""
        self.stop.install()
        try:
            yield self
        finally:
            self.stop.restore()

    def _signalled(self) -> int:
        return (
            int(distributed.all_reduce_sum(self.stop.signum, device=self.device)[0])
            if self.env.enabled
            else self.stop.signum
        )

    def _exit_saved(self) -> None:
        signum = self.stop.signum or signal.SIGTERM
        self.log(
            f"{signal.Signals(signum).name}: saved {self.last} at epoch {self.epoch + 1} step {self.step}; exiting"
        )
        request_requeue(self.env, signum, self.log)
        raise Preempted(PREEMPT_EXIT[signum])

    # ---- the loop
    def train_one_epoch(self, epoch: int, desc: str = "") -> None:
        """Micro-steps from the saved position to the end of ``epoch``; sums in ``self.stats``."""
        env = self.env
        start = self.step if epoch == self.epoch else 0
        self.epoch, self.step = epoch, start
        self.sampler.set_epoch(epoch, start)
        self.model.train()
        self._t0 = time.time()
        bar = (
            Progress(total=len(self.sampler) * env.world_size, desc=desc or f"epoch {epoch + 1}", unit="img")
            if env.is_main
            else None
        )
        fetch_start = time.perf_counter()
        for step, (x, y) in enumerate(self.loader, start=start):
            try:
                self.stats.data_s += time.perf_counter() - fetch_start
                self._micro_step(epoch, step, x, y, bar)
            finally:
                fetch_start = time.perf_counter()
        if bar is not None:
            bar.close()
        self.stats.train_s += time.time() - self._t0

    def _micro_step(self, epoch: int, step: int, x, y, bar) -> None:
        """Forward/backward of one micro-batch; the optimizer update (and a checkpoint) at its group's end."""
        env, device, accum, micro_steps = self.env, self.device, self.accum, self.micro_steps
        # a step's RNG draws (mixup, drop-path) depend only on its position
        seed_rngs(step_seed(self.seed, epoch, step, env.rank), device)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        group = step // accum
        group_steps = range(group * accum, min((group + 1) * accum, micro_steps))
        is_update = step == group_steps[-1]
        if step % accum == 0:
            self.scheduler.step_update(epoch * self.updates_per_epoch + group)
        sync = contextlib.nullcontext() if is_update or not env.enabled else self.net.no_sync()
        with sync:
            with autocast(device, self.amp_dtype):
                loss = self.loss_fn(self.net, x, y)
            # the update's gradient is the mean over all its images, however they were split
            share = len(x) / sum(self.sampler.batch_len(i) for i in group_steps)
            scaled = self.scaler.scale(loss * share)
            if hasattr(self.criterion, "loss_scale"):  # the scaler's current scale (a tensor: no sync)
                self.criterion.loss_scale = self.scaler._get_scale_async() if self.scaler.is_enabled() else None
            scaled.backward()
        self.stats.loss_sum += loss.item() * len(x)
        self.stats.seen += len(x)
        if bar is not None:
            bar.update(len(x) * env.world_size)
        if not is_update:
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step + 1
        signalled = self._signalled()
        if signalled or (
            self.checkpoint_every and (group + 1) % self.checkpoint_every == 0 and self.step < micro_steps
        ):
            self.stats.train_s += time.time() - self._t0
            self._t0 = time.time()
            self.save()
        if signalled:
            self._exit_saved()

    def epoch_totals(self) -> tuple[float, float, float]:
        """(mean train loss, images, images/s) of the epoch just trained, over all ranks."""
        loss_sum, seen = distributed.all_reduce_sum(self.stats.loss_sum, self.stats.seen, device=self.device)
        return loss_sum / max(seen, 1), seen, seen / max(self.stats.train_s, 1e-9)

    def data_wait(self) -> float:
        """Share of this epoch's training time spent waiting for the loader (the slowest rank's)."""
        share = self.stats.data_s / max(self.stats.train_s, 1e-9)
        if self.env.enabled:
            import torch.distributed as dist

            t = torch.tensor([share], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            share = t.item()
        return share

    def end_epoch(self, row: dict) -> None:
        """Record the epoch's row, checkpoint at the start of the next epoch, honour a pending signal."""
        self.history.append(row)
        self.epoch, self.step, self.stats = self.epoch + 1, 0, RunningStats()
        self.save()
        if self._signalled():
            self._exit_saved()
