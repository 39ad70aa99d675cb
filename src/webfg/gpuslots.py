"""Which GPUs a job on a shared machine may use: a lock-file slot per GPU.

Snakemake's local scheduler counts GPUs (``--resources gpu=N``, each job's ``gpu``
resource) so that the jobs it runs side by side fit, but it does not say *which* GPUs a
job gets (snakemake/snakemake#281). ``gpu_slots(n)`` picks ``n`` free ones: it takes a
non-blocking ``flock`` on one lock file per GPU, holds the locks for the job's life (the
kernel frees them when the process ends, even on SIGKILL), and sets
``CUDA_VISIBLE_DEVICES`` to the GPUs it holds, so each job (and the torchrun processes
it starts) sees only its own devices.

The machine's GPUs: ``WEBFG_GPU_IDS`` (a comma list, to lend webfg only some GPUs),
else ``CUDA_VISIBLE_DEVICES`` as set for Snakemake, else every ``/dev/nvidiaN``. Locks
live in ``WEBFG_GPU_LOCK_DIR`` (default: ``<tmp>/webfg-gpu-slots-<uid>``), shared by
every webfg run of the user on the machine. Inside a Slurm job the allocation is
Slurm's: nothing is locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import tempfile
import time
from pathlib import Path

from webfg.io import InputError


def machine_gpus(environ=None) -> list[str]:
    """The GPU ids webfg jobs on this machine may use (torch-free: usable at parse time)."""
    env = os.environ if environ is None else environ
    for var in ("WEBFG_GPU_IDS", "CUDA_VISIBLE_DEVICES"):
        if env.get(var) is not None:
            return [i.strip() for i in env[var].split(",") if i.strip() and i.strip() != "-1"]
    count = sum(1 for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name))
    return [str(i) for i in range(count)]


def lock_dir(environ=None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("WEBFG_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / f"webfg-gpu-slots-{os.getuid()}")


@contextlib.contextmanager
def gpu_slots(n: int, log=print, timeout_s: float = 600.0, environ=None):
    """Hold ``n`` of the machine's GPUs for the ``with`` block; yields their ids.

    Sets ``CUDA_VISIBLE_DEVICES`` in ``environ`` (default ``os.environ``). Waits (up to
    ``timeout_s``) only while a finished job's process still holds a slot."""
    env = os.environ if environ is None else environ
    if n <= 0 or env.get("SLURM_JOB_ID"):
        yield [i for i in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if i] if n > 0 else []
        return
    ids = machine_gpus(env)
    if n > len(ids):
        raise InputError(
            f"the job asks for {n} GPU(s), this machine lends {len(ids)} ({','.join(ids) or 'none'}; "
            "WEBFG_GPU_IDS / CUDA_VISIBLE_DEVICES / /dev/nvidiaN)"
        )
    directory = lock_dir(env)
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    held: list[tuple[str, int]] = []
    while True:
        for gpu in ids:
            fd = os.open(directory / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((gpu, fd))
            if len(held) == n:
                break
        if len(held) == n:
            break
        for _, fd in held:  # all or nothing: never sit on some slots while waiting for more
            os.close(fd)
        held = []
        if time.monotonic() > deadline:
            raise InputError(f"no {n} free GPU slot(s) of {','.join(ids)} in {directory} after {timeout_s:.0f}s")
        time.sleep(random.uniform(0.5, 2.0))
    devices = [gpu for gpu, _ in held]
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    for _, fd in held:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    log(f"GPU slots: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} start {time.time():.3f}")
    try:
        yield devices
    finally:
        log(f"GPU slots: released {env['CUDA_VISIBLE_DEVICES']} end {time.time():.3f}")
        for _, fd in held:
            os.close(fd)
