"""Checkpoint I/O, the resume fingerprint, and pre-emption: what makes a run resumable.

A resumable run writes its whole state atomically to ``state_dir/last.pt`` with a
fingerprint of what it learns from (config without the runtime knobs + the image lists);
a restarted job continues from it only when the fingerprint matches, and removes a stale
one. SIGUSR1/SIGTERM (Slurm's pre-emption and time-limit warnings) and SIGINT (Ctrl-C)
set a flag that the loop reads at its next update: it saves and raises ``Preempted``,
whose code is the exit status (75 = EX_TEMPFAIL, 128 + signal otherwise). A second
Ctrl-C interrupts at once. Under Slurm, SIGUSR1 also requeues the job.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import threading
from pathlib import Path

import torch

from webfg import distributed
from webfg.io import InputError, atomic_path


def fingerprint(cfg, lists, extra: str = "") -> str:
    """sha256 of the config's learning fields, the bytes of every list, and ``extra``."""
    h = hashlib.sha256(json.dumps(cfg.learning_dict(), sort_keys=True).encode())  # runtime knobs left out
    for path in [lists] if isinstance(lists, (str, Path)) else lists:
        h.update(Path(path).read_bytes())
    h.update(extra.encode())
    return h.hexdigest()


def save_torch(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path) -> dict:
    """Load a webfg checkpoint: tensors and plain containers only (weights_only=True)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError, EOFError ...
        if "Weights only load failed" in str(e):  # torch's several-paragraph advice, in one line
            why = "it holds Python objects besides tensors and plain containers, which are never unpickled"
        else:
            why = f"{type(e).__name__}: " + next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        raise InputError(f"{path}: not a loadable webfg checkpoint ({why})") from None


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


class Preempted(SystemExit):
    """Raised after the state is saved on a stop signal; its code is the process's exit code."""


PREEMPT_EXIT = {signal.SIGUSR1: 75, signal.SIGTERM: 143, signal.SIGINT: 130}  # 75: EX_TEMPFAIL, else 128 + n


class StopFlag:
    """Remembers the first stop signal; the loop checks it at update boundaries.

    A second SIGINT raises KeyboardInterrupt at once (a user who presses Ctrl-C twice
    does not want to wait for the next update)."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPT_EXIT:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


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
