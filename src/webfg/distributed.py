"""One process per GPU: rank, world size and master from torchrun's or Slurm's environment.

- ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.
- ``srun`` with several tasks sets SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID and
  the step's node list; the master is the list's first host (``expand_hostlist``, no
  ``scontrol`` call) and the port is derived from the job id (the same on every rank) unless
  MASTER_PORT is set.
- Anything else (a plain process, or the batch script of a multi-task job, which is not an
  ``srun`` step) is rank 0 of 1 and initialises nothing.

gloo on CPU, NCCL on GPUs. The master is resolved before ``init_process_group``, and the
rendezvous has a timeout (WEBFG_DIST_TIMEOUT seconds, default 300) so a wrong address is an
error naming it, not a hang.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import socket
from dataclasses import dataclass

from webfg.io import InputError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = ""
    master_port: int = 0
    launcher: str = "none"  # "torchrun", "srun" or "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list -> host names, in order.

    ``node[01-03,7],gpu5`` -> node01 node02 node03 node7 gpu5; several bracket groups in one name
    (``r[1-2]-n[1-2]``) expand as a product; zero padding is kept from the range's start.
    """
    hosts: list[str] = []
    for name in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", hostlist):
        expanded = [""]
        for literal, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", name):
            values = [""]
            if ranges:
                values = []
                for part in ranges.split(","):
                    lo, _, hi = part.partition("-")
                    if not lo.isdigit() or (hi and not hi.isdigit()):
                        raise InputError(f"Slurm host list {hostlist!r}: cannot read the range {part!r}")
                    values += [str(i).zfill(len(lo)) for i in range(int(lo), int(hi or lo) + 1)]
            expanded = [e + literal + v for e in expanded for v in values]
        hosts += expanded
    return hosts


def detect(environ=None) -> DistEnv:
    """Read the launcher's environment (no side effects)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        world = int(env["WORLD_SIZE"])
        return DistEnv(
            int(env["RANK"]),
            world,
            int(env.get("LOCAL_RANK", 0)),
            env.get("MASTER_ADDR", "127.0.0.1"),
            int(env.get("MASTER_PORT", 29500)),
            "torchrun" if world > 1 else "none",
        )
    if int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1 and "SLURM_PROCID" in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or socket.gethostname()
        job_id = env.get("SLURM_JOB_ID", "0")
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else random.Random(job_id).randint(20000, 60000)
        return DistEnv(
            int(env["SLURM_PROCID"]),
            int(env["SLURM_STEP_NUM_TASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
            expand_hostlist(nodes)[0],
            port,
            "srun",
        )
    return DistEnv()


def init(backend: str | None = None) -> DistEnv:
    """Initialise torch.distributed when launched with several processes; return the env."""
    import torch
    import torch.distributed as dist

    env = detect()
    if not env.enabled:
        return env
    if dist.is_initialized():
        return env
    try:
        socket.getaddrinfo(env.master_addr, env.master_port)
    except OSError as e:
        raise InputError(
            f"distributed ({env.launcher}): master address {env.master_addr!r} does not resolve ({e})"
        ) from None
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    timeout = datetime.timedelta(seconds=float(os.environ.get("WEBFG_DIST_TIMEOUT", 300)))
    try:
        dist.init_process_group(
            backend,
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank,
            world_size=env.world_size,
            timeout=timeout,
        )
    except Exception as e:  # DistNetworkError, RuntimeError (timeout), ...
        raise InputError(
            f"distributed ({env.launcher}): rank {env.rank}/{env.world_size} could not reach the "
            f"master {env.master_addr}:{env.master_port} within {timeout.total_seconds():.0f}s "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    return env


def device_for(env: DistEnv):
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def all_reduce_sum(*values: float, device=None) -> list[float]:
    """Sum scalars over ranks (identity when not distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
