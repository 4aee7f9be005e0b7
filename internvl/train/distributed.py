"""Process groups, logging and seeding shared by every subproject.

One script runs unchanged under torchrun, under SLURM ``srun`` and as a plain ``python`` process
on a CPU laptop::

    from internvl.train.distributed import init_distributed, setup_logging, seed_everything

    info = init_distributed()
    setup_logging(info.rank, log_file=f"{output_dir}/log_rank0.txt")
    seed_everything(cfg.seed, info.rank)
    model.to(info.device)

Collectives (``barrier``, ``all_gather_object``, ``all_reduce_sum``) are no-ops in a single
process, so evaluation code needs no ``if distributed`` branches.
"""
from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist

DEFAULT_MASTER_PORT = 29500

# --------------------------------------------------------------------------- process groups
@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher told this process through the environment (no process group yet)."""

    launcher: str  # "torchrun", "slurm" or "single"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job, and the device it should use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when no process group was created

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and reports metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group exists (even of size 1 under torchrun), so collectives are real."""
        return self.backend is not None


def _env_int(environ: Mapping[str, str], name: str, minimum: int = 0) -> int:
    """An integer environment variable; a missing or bad value is an error that names it."""
    if name not in environ:
        raise ValueError(f"environment variable {name} is not set")
    raw = environ[name]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"environment variable {name}={value} must be >= {minimum}")
    return value


_HOSTNAME = r"(?:[^,\[\]]|\[[^\[\]]+\])+"  # a host name, possibly with bracket groups


def parse_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compact host list, e.g. ``node[01-03,07]`` or ``rack[1-2]-node[01-02]``.

    Done here rather than with ``scontrol show hostnames`` so that it works wherever the job's
    environment does (containers, login nodes without SLURM tools). Zero padding is kept, and
    several bracket groups in one name expand as a product, leftmost group slowest, as SLURM does.
    """
    if not re.fullmatch(rf"{_HOSTNAME}(?:,{_HOSTNAME})*", nodelist):
        raise ValueError(f"malformed SLURM node list {nodelist!r}")
    hosts: list[str] = []
    for name in re.findall(_HOSTNAME, nodelist):
        expanded = [""]
        for literal, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", name):
            choices = [literal + item for item in _expand_ranges(ranges, nodelist)] if ranges else [literal]
            expanded = [head + tail for head in expanded for tail in choices]
        hosts.extend(expanded)
    return hosts


def _expand_ranges(ranges: str, nodelist: str) -> list[str]:
    """``01-03,07`` -> ``["01", "02", "03", "07"]``, keeping the width of the lower bound."""
    items = []
    for part in ranges.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ValueError(f"malformed range {part!r} in SLURM node list {nodelist!r}")
        low, high = match[1], match[2] or match[1]
        items.extend(str(i).zfill(len(low)) for i in range(int(low), int(high) + 1))
    return items


def detect_launch_env(environ: Mapping[str, str] = os.environ) -> LaunchEnv:
    """Read the launcher's variables without side effects.

    torchrun's ``RANK``/``WORLD_SIZE`` win over SLURM's, so ``srun torchrun ...`` (one torchrun per
    node) works. Under SLURM the rendezvous address is the first host of the node list unless
    ``MASTER_ADDR`` is set, and the port is ``MASTER_PORT`` or 29500, as in upstream InternVL.
    """
    if "RANK" in environ or "WORLD_SIZE" in environ:
        launcher = "torchrun"
        rank = _env_int(environ, "RANK")
        world_size = _env_int(environ, "WORLD_SIZE", minimum=1)
        local_rank = _env_int(environ, "LOCAL_RANK")
        master_port = _env_int(environ, "MASTER_PORT", minimum=1)
        if not environ.get("MASTER_ADDR"):
            raise ValueError("environment variable MASTER_ADDR is not set (RANK/WORLD_SIZE are: torchrun launch)")
        master_addr = environ["MASTER_ADDR"]
    elif "SLURM_PROCID" in environ:
        launcher = "slurm"
        rank = _env_int(environ, "SLURM_PROCID")
        world_size = _env_int(environ, "SLURM_NTASKS", minimum=1)
        local_rank = _env_int(environ, "SLURM_LOCALID")
        master_port = _env_int(environ, "MASTER_PORT", minimum=1) if "MASTER_PORT" in environ else DEFAULT_MASTER_PORT
        master_addr = environ.get("MASTER_ADDR")
        if not master_addr:
            nodelist = environ.get("SLURM_NODELIST") or environ.get("SLURM_JOB_NODELIST")
            if not nodelist:
                raise ValueError("SLURM launch: neither SLURM_NODELIST, SLURM_JOB_NODELIST nor MASTER_ADDR is set")
            master_addr = parse_slurm_nodelist(nodelist)[0]
    else:
        return LaunchEnv("single")
    if rank >= world_size:
        rank_var, world_var = ("RANK", "WORLD_SIZE") if launcher == "torchrun" else ("SLURM_PROCID", "SLURM_NTASKS")
        raise ValueError(f"{rank_var}={rank} is not below {world_var}={world_size}")
    return LaunchEnv(launcher, rank, world_size, local_rank, master_addr, master_port)


def _initialized() -> bool:
    """False also where torch was built without distributed support."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None, timeout_minutes: float = 30) -> DistInfo:
    """Join the job's process group (torchrun or SLURM) or run as a single process.

    The backend is NCCL when CUDA is available and gloo otherwise; ``backend`` overrides it. On
    CUDA each process takes GPU ``local_rank % device_count``. Under SLURM the torch variables
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) are exported, so
    ``env://`` initialisation and libraries that read them (HF ``Trainer``, DeepSpeed) agree. If a
    process group already exists (a library created it), it is reused.
    """
    env = detect_launch_env(os.environ)
    cuda = torch.cuda.is_available()
    if env.launcher == "single":
        return DistInfo(0, 1, 0, torch.device("cuda", 0) if cuda else torch.device("cpu"), None)

    if env.launcher == "slurm":
        os.environ.update(RANK=str(env.rank), WORLD_SIZE=str(env.world_size), LOCAL_RANK=str(env.local_rank),
                          MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port))
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not _initialized():
        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(minutes=timeout_minutes),
                                device_id=device if backend == "nccl" else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), env.local_rank, device, dist.get_backend())


def cleanup_distributed() -> None:
    """Destroy the process group, if any (avoids NCCL's warning about leaked groups at exit)."""
    if _initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank; nothing to wait for in a single process."""
    if _initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order: ``[obj]`` in a single process."""
    if not _initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (on the backend's device: CUDA for NCCL)."""
    if _initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_norm_statistics(model: torch.nn.Module, info: DistInfo, extra: Iterable[torch.Tensor] = ()) -> None:
    """Processes without SyncBatchNorm (CPU, gloo) average their BatchNorm running statistics (and the tensors in
    ``extra``, an EMA's copies say) over the processes before a save or an evaluation, so that every process holds
    what the checkpoint holds. A no-op for one process and on GPUs (SyncBatchNorm)."""
    if not info.distributed or info.device.type == "cuda":
        return
    buffers = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               and m.track_running_stats for b in (m.running_mean, m.running_var)]
    for buffer in [*buffers, *extra]:
        all_reduce_sum(buffer).div_(info.world_size)


def shard_indices(total: int, world_size: int, rank: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(total)``, how every evaluation splits its set: sizes
    differ by at most one, blocks are disjoint and cover every index once, and concatenating the ranks'
    results in rank order (:func:`all_gather_object`) restores the original order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    base, extra = divmod(total, world_size)
    begin = rank * base + min(rank, extra)
    return range(begin, begin + base + (rank < extra))


# --------------------------------------------------------------------------- logging and seeding
def setup_logging(rank: int = 0, log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Configure the root logger: rank 0 at ``level``, other ranks WARNING and above only.

    Every line carries time, rank and level so that interleaved multi-rank output stays readable.
    Only rank 0 writes ``log_file``. Calling again replaces the handlers installed here, so
    re-running setup (notebooks, tests, resumed runs) never duplicates lines.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_internvl_runtime", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level if rank == 0 else max(level, logging.WARNING))
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    formatter = logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s",
                                  datefmt="%Y-%m-%d %H:%M:%S")
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._internvl_runtime = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch (all CUDA devices too) with ``seed + rank``; return that seed.

    Adding the rank gives each process different augmentation and dropout streams while keeping
    the whole run reproducible from one number.
    """
    effective = seed + rank
    random.seed(effective)
    np.random.seed(effective)
    torch.manual_seed(effective)  # also seeds every CUDA device
    return effective
