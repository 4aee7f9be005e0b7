"""Runtime helpers shared by every subproject: process groups, logging, seeding, checkpoints, dtypes.

One script runs unchanged under torchrun, under SLURM ``srun`` and as a plain ``python`` process
on a CPU laptop::

    from internvl.runtime import init_distributed, setup_logging, seed_everything

    info = init_distributed()
    setup_logging(info.rank, log_file=f"{output_dir}/log_rank0.txt")
    seed_everything(cfg.seed, info.rank)
    model.to(info.device)

Collectives (``barrier``, ``all_gather_object``, ``all_reduce_sum``) are no-ops in a single
process, so evaluation code needs no ``if distributed`` branches.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import secrets
import warnings
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Mapping

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


# --------------------------------------------------------------------------- checkpoints
def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a truncated file behind.

    Writes a temp file in the same directory (so the rename stays on one file system), fsyncs it
    and renames it over ``path``: a crash or an error mid-save leaves the previous file intact.
    The file gets the permissions of any new file (0666 less the umask), so colleagues sharing a
    cluster file system can read checkpoints whenever they can read the run folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _create_temp_file(path: Path) -> tuple[int, str]:
    """A new hidden file beside ``path``, opened for writing. Unlike ``tempfile.mkstemp`` (always
    0600), it is created with mode 0666 and the process umask applies, as for any other new file."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _numbered(directory: Path, pattern: str) -> list[tuple[int, Path]]:
    """Files matching ``pattern`` whose ``*`` is an integer, sorted by it (mtime lies after copies)."""
    if pattern.count("*") != 1:
        raise ValueError(f"checkpoint pattern {pattern!r} must contain exactly one '*' (the step or epoch)")
    prefix, suffix = pattern.split("*")
    regex = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    found = [(int(m[1]), p) for p in directory.glob(pattern) if (m := regex.fullmatch(p.name))]
    return sorted(found)


def save_checkpoint(state: dict, directory: str | Path, name: str, keep_last: int | None = None) -> Path:
    """Write ``state`` to ``directory/name`` atomically; with ``keep_last``, prune older ones.

    Older checkpoints are those whose name matches ``name`` with its last integer replaced by
    ``*`` (``checkpoint-12.pth`` -> ``checkpoint-*.pth``); the newest ``keep_last`` by number are
    kept, and the file just written is never deleted.
    """
    path = atomic_save(state, Path(directory) / name)
    if keep_last is not None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        numbers = list(re.finditer(r"\d+", name))
        if not numbers:
            raise ValueError(f"keep_last needs a step or epoch number in the checkpoint name, got {name!r}")
        pattern = name[:numbers[-1].start()] + "*" + name[numbers[-1].end():]
        for _, old in _numbered(path.parent, pattern)[:-keep_last]:
            if old != path:
                old.unlink()
    return path


def latest_checkpoint(directory: str | Path, pattern: str = "checkpoint-*.pth") -> Path | None:
    """The checkpoint with the highest number in ``directory`` (``checkpoint-10`` beats ``-9``), or None.

    It is not opened: to resume, :func:`load_latest_checkpoint` also skips a damaged newest file."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = _numbered(directory, pattern)
    return found[-1][1] if found else None


def load_latest_checkpoint(candidates: str | Path | Iterable[Path], pattern: str = "checkpoint-*.pth",
                           load: Callable[[Path], Any] | None = None) -> tuple[Path, Any] | None:
    """Auto-resume: ``(path, loaded)`` for the newest checkpoint that can be read, or None if there is none.

    ``candidates`` is a directory (its files matching ``pattern``, highest number first) or the paths
    to try, newest first. A file ``load`` (default :func:`load_checkpoint`) reports as damaged
    (:class:`~internvl.errors.CheckpointError`: cut short by a crash, a full disk, a copy that did not
    finish) is skipped with a warning naming it and why, and the next newest is tried. If every one
    is damaged, that is an error listing them all, rather than a silent restart from scratch.
    """
    from .errors import CheckpointError

    load = load or load_checkpoint
    if isinstance(candidates, (str, Path)):
        directory = Path(candidates)
        paths = [p for _, p in reversed(_numbered(directory, pattern))] if directory.is_dir() else []
    else:
        paths = [Path(p) for p in candidates]
    skipped = []
    for path in paths:
        try:
            return path, load(path)
        except CheckpointError as e:
            skipped.append(f"{path}: {e}")
            logging.getLogger(__name__).warning("auto-resume: skipping %s, it cannot be read (%s); trying the "
                                                "next newest checkpoint", path, e)
    if skipped:
        raise CheckpointError(f"none of the {len(skipped)} checkpoints to resume from can be read: "
                              f"{'; '.join(skipped)}. Delete them to start the run afresh, or resume from a "
                              "copy of your own")
    return None


def load_torch_file(path: str | Path, *, mmap: bool = False, weights_only: bool = True,
                    map_location: str | torch.device = "cpu", **kwargs) -> Any:
    """``torch.load`` of a ``.pth`` / ``.bin`` file whose errors name the file.

    A missing file is a :class:`~internvl.errors.MissingFileError`. A file that does not read (torch
    meets a truncated zip archive, an empty file, bytes that are not a checkpoint: RuntimeError,
    EOFError, ``OSError [Errno 22]`` ...) is a :class:`~internvl.errors.CheckpointError` that says it
    is damaged. An object the unpickler refuses (``weights_only`` meeting a pickled class: torch's
    message names the "global") is left as torch raises it, ``pickle.UnpicklingError``, for callers that
    know how to read such files. ``mmap`` applies to the zip format only (legacy files are read into memory).
    """
    from .errors import CheckpointError, MissingFileError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap, **kwargs)
    except PermissionError as e:
        raise CheckpointError(f"{path} cannot be read: {e.strerror}") from None
    except pickle.UnpicklingError as e:
        # torch wraps the unpickler's own message in advice: "... WeightsUnpickler error: <message>\n\n..."
        message = str(e).split("WeightsUnpickler error:")[-1].strip()
        if re.search(r"global|allowlist|refusing", message, re.IGNORECASE):
            raise  # a well-formed pickle holding an object the unpickler does not allow
        error, detail = e, message  # bytes that are no pickle: "Unsupported operand 110", "pickle data was truncated"
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        error, detail = e, str(e).strip()
    reason = type(error).__name__ + (f": {detail.splitlines()[0]}" if detail else "")
    raise CheckpointError(f"{path} cannot be read: the file is damaged or incomplete ({path.stat().st_size} "
                          f"bytes; torch says {reason}); replace it with a good copy, or delete it") from error


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict, by default onto the CPU so that any rank can load any checkpoint.

    ``weights_only=True``: tensors, numbers, strings and containers load; arbitrary pickled
    objects (which could run code from a downloaded file) are refused. A missing or damaged
    file is an error naming it (:func:`load_torch_file`).
    """
    path = Path(path)
    state = load_torch_file(path, map_location=map_location)
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


STATE_DICT_KEYS = ("model", "module", "state_dict")


def unwrap_state_dict(checkpoint: Mapping, source: str | os.PathLike = "checkpoint") -> dict:
    """The model tensors of a loaded checkpoint, however a trainer wrapped them.

    The dict itself when its values are tensors; else the dict under ``model`` (upstream's
    classification, timm), ``module`` (DeepSpeed) or ``state_dict`` (Lightning, mmengine), as deep
    as they are nested (``{"model": {"module": ...}}``). Two of them side by side is ambiguous and an
    error. Names that all start with ``module.`` (a state dict taken from a DDP-wrapped model) lose
    that prefix. Anything else is a :class:`~internvl.errors.CheckpointError` naming ``source``.
    """
    from .errors import CheckpointError

    obj, route = checkpoint, []
    while isinstance(obj, Mapping):
        wrappers = [key for key in STATE_DICT_KEYS if isinstance(obj.get(key), Mapping)]
        if not wrappers:
            break
        if len(wrappers) > 1:
            raise CheckpointError(f"{source}: both {' and '.join(repr(k) for k in wrappers)} hold a dict; "
                                  "cannot tell which is the model's state dict")
        route.append(wrappers[0])
        obj = obj[wrappers[0]]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        where = "".join(f"[{k!r}]" for k in route) or "the top level"
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{source}: no state dict (tensors by name) at {where}, nor under "
                              f"{', '.join(STATE_DICT_KEYS)}; found {keys}")
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


# --------------------------------------------------------------------------- dtypes
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_dtype(name: str | torch.dtype, device: torch.device | str | None = None) -> torch.dtype:
    """``"bf16"`` / ``"float16"`` / ``torch.float32`` ... -> a floating torch dtype.

    ``"auto"`` is :func:`default_dtype_for` ``device`` (bf16 on a GPU that computes in it, else fp32);
    it needs the device. Every ``--dtype`` flag of the suite goes through here.
    """
    from .errors import ConfigError

    if isinstance(name, torch.dtype):
        if name in _DTYPES.values():
            return name
    elif name.strip().lower() == "auto":
        if device is None:
            raise ValueError("resolve_dtype('auto') needs the device the model runs on")
        return default_dtype_for(device)
    elif name.strip().lower() in _DTYPES:
        return _DTYPES[name.strip().lower()]
    raise ConfigError(f"unsupported dtype {name!r}; expected auto, one of {', '.join(_DTYPES)} "
                      f"(or torch.float32/float16/bfloat16)")


def default_dtype_for(device: torch.device | str) -> torch.dtype:
    """bf16 on a CUDA device that computes in bf16 natively (Ampere and newer), else fp32."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        with torch.cuda.device(device):
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return torch.bfloat16
    return torch.float32


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager:
    """Mixed precision where it applies: CUDA fp16/bf16 and CPU bf16; otherwise a no-op context.

    fp32 or None means full precision. fp16 autocast on CPU is not used (slow and poorly
    covered); that case warns and runs in fp32 rather than silently pretending to be fp16.
    """
    device = torch.device(device)
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    if device.type == "cuda" or (device.type == "cpu" and dtype == torch.bfloat16):
        return torch.autocast(device.type, dtype=dtype)
    warnings.warn(f"no {dtype} autocast on {device.type}; running in float32", stacklevel=2)
    return contextlib.nullcontext()
