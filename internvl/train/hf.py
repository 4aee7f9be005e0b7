"""The Hugging Face ``Trainer`` glue of the suite's two Trainer entry points (``internvl_g.finetune``, the
retrieval fine-tune; ``internvl_chat.finetune``, the chat fine-tunes), once: upstream's command lines on
transformers 4 and 5, where a run resumes, DeepSpeed checks. What parameters train is
:mod:`internvl.train.trainable`; the hand-written loops' ``.pth`` checkpoints are :mod:`internvl.train.checkpoints`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import transformers
from transformers import TrainerCallback

from ..errors import CheckpointError, ConfigError, MissingFileError
from ..fileio import read_json

__all__ = ["TrainingArguments", "LEGACY_FLAGS", "parse_args", "resume_checkpoint", "checkpoint_damage",
           "CheckpointCompleteCallback", "COMPLETE_MARKER", "finished_run", "read_deepspeed_config", "weights_dtype",
           "zero3_checkpoint_options", "apply_zero3_checkpoint_options", "models_built_whole",
           "prepare_deepspeed_on_cpu", "cpu_deepspeed_optimizer", "build_deepspeed_cpu_ops", "fit_loader_to_machine",
           "hold_output_dir", "RUN_LOCK"]

logger = logging.getLogger(__name__)

# Upstream spelling -> current spelling, for flags transformers renamed.
LEGACY_FLAGS = {"evaluation_strategy": "eval_strategy"}
# Two spellings of one setting (transformers 5's name second); the old one is the only one in 4.x.
_ALIASES = (("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"))
COMPLETE_MARKER = "checkpoint_complete.json"
RUN_LOCK = ".run.lock"  # in --output_dir while a run writes there (see hold_output_dir)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


_HF_FIELDS = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """``transformers.TrainingArguments`` with the flags upstream's scripts pass that transformers 5 removed
    (on transformers 4 the parent's own fields serve, with the parent's meaning)."""

    overwrite_output_dir: bool = field(default=False, metadata={"help": (
        "Allow an --output_dir that holds files but no checkpoint. A run resumes from the newest complete "
        "checkpoint in --output_dir either way; to start over, use a new --output_dir.")})
    if "group_by_length" not in _HF_FIELDS:
        group_by_length: bool = field(default=False, metadata={"help": (
            "Batch samples of similar length (upstream's flag; --train_sampling_strategy group_by_length).")})
    if "warmup_ratio" not in _HF_FIELDS:
        warmup_ratio: Optional[float] = field(default=None, metadata={"help": (
            "Warm-up as a fraction of the training steps (upstream's flag; a --warmup_steps below 1).")})
    if "logging_dir" not in _HF_FIELDS:
        logging_dir: Optional[str] = field(default=None, metadata={"help": (
            "TensorBoard directory (upstream's flag; sets TENSORBOARD_LOGGING_DIR).")})
    if "save_safetensors" not in _HF_FIELDS:
        save_safetensors: bool = field(default=True, metadata={"help": (
            "Accepted for upstream's scripts; checkpoints are always safetensors.")})

    def __post_init__(self):
        # transformers 5's spelling of the flags it removed (on 4.x these are the parent's own fields)
        if "group_by_length" not in _HF_FIELDS and self.group_by_length:
            self.train_sampling_strategy = "group_by_length"
        if "warmup_ratio" not in _HF_FIELDS and self.warmup_ratio:
            if not 0 < self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio {self.warmup_ratio} must be in [0, 1)")
            if not self.warmup_steps:
                self.warmup_steps = self.warmup_ratio
        if "logging_dir" not in _HF_FIELDS and self.logging_dir:
            os.environ["TENSORBOARD_LOGGING_DIR"] = self.logging_dir
        if "save_safetensors" not in _HF_FIELDS and not self.save_safetensors:
            raise ValueError("--save_safetensors False: this transformers writes safetensors only; leave it out")
        super().__post_init__()


def _rename_legacy(argv: Sequence[str], fields: set) -> list[str]:
    """Upstream's flags under this transformers' names: the renamed ones, and the deprecated spellings of
    :data:`_ALIASES` where ``fields`` has the new one (so upstream's ``--gradient_checkpointing`` warns nothing)."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--"):
            name = LEGACY_FLAGS.get(flag[2:], flag[2:])
            if name != flag[2:] or name in {old for old, _ in _ALIASES}:
                arg = f"--{_current_spelling(name, fields)}{eq}{value}"
        out.append(arg)
    return out


def _spellings(name: str) -> set:
    return next((set(pair) for pair in _ALIASES if name in pair), {name})


def _current_spelling(name: str, fields: set) -> str:
    """transformers 5's name of a renamed argument when this transformers has it (no deprecation warning)."""
    for old, new in _ALIASES:
        if name in (old, new):
            return new if new in fields else old
    return name


def _given(argv: Sequence[str]) -> set:
    return {arg[2:].partition("=")[0] for arg in argv if arg.startswith("--")}


def parse_args(dataclass_types: Sequence[type], argv: Optional[Sequence[str]] = None,
               defaults: Optional[dict] = None) -> tuple:
    """Parse ``argv`` (default ``sys.argv[1:]``), or the single ``.json`` file it names, into instances of
    ``dataclass_types`` (include :class:`TrainingArguments` or a subclass). Unknown flags and keys are errors
    that name them. ``defaults``: values of the entry point for arguments the command line does not give
    (under any of their spellings), e.g. ``{"gradient_checkpointing": True}``."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(tuple(dataclass_types))
    fields = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    json_file = len(argv) == 1 and argv[0].endswith(".json")
    renamed = _rename_legacy(argv, fields)
    given = _given(renamed) if not json_file else set()
    injected = {}
    for name, value in (defaults or {}).items():
        spellings = _spellings(name)
        if not spellings & given:
            injected[_current_spelling(name, fields)] = value
    if json_file:
        path = Path(argv[0])
        values = read_json(path, "arguments file", kind=dict, error=ConfigError)
        values = {_current_spelling(LEGACY_FLAGS.get(k, k), fields): v for k, v in values.items()}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(f"{path}: unknown argument(s) {', '.join(unknown)}; see --help")
        for name, value in injected.items():
            if not _spellings(name) & set(values):
                values[name] = value
        return _user_errors(parser.parse_dict, values)
    prefix = [item for name, value in injected.items()
              for item in (f"--{name}", json.dumps(value) if isinstance(value, dict) else str(value))]
    *parsed, unknown = _user_errors(parser.parse_args_into_dataclasses, args=prefix + renamed,
                                    return_remaining_strings=True)
    if unknown:
        raise ConfigError(f"unknown flag(s): {' '.join(unknown)}; see --help for the flags")
    return tuple(parsed)


def _user_errors(parse, *args, **kwargs):
    # TrainingArguments checks its flags in __post_init__ and raises ValueError ("--bf16 needs a GPU or
    # --use_cpu", "--deepspeed <json> has no zero_optimization", ...): messages about the flags, for the user.
    try:
        parsed = parse(*args, **kwargs)
    except ValueError as e:
        hint = " (on a CPU: --use_cpu True --bf16 False)" if re.search(r"\b(bf16|fp16)\b", str(e)) else ""
        raise ConfigError(f"invalid training arguments: {e}{hint}") from e
    for args in parsed:
        if isinstance(args, transformers.TrainingArguments) and args.device.type == "cpu":
            # accelerate calls the CPU of a multi-process CPU run "cpu:0", and transformers 4 loads the optimizer
            # state of a resumed run onto args.device, which torch.load cannot map to "cpu:0": the same device
            args.__dict__["_setup_devices"] = torch_device("cpu")
    return parsed


def torch_device(name: str):
    import torch

    return torch.device(name)


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m[1]), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def checkpoint_damage(directory: str | os.PathLike) -> list[str]:
    """``"<file>: <why>"`` for each file of a Trainer checkpoint directory that cannot be read: its
    ``trainer_state.json`` (missing, empty, not JSON), weights (``*.safetensors``, ``*.bin``), optimizer, scheduler
    and random states (``*.pt``, ``*.pth``, DeepSpeed's ``global_step*/`` files); empty when it is whole.
    Reads headers and archive directories only."""
    from ..models.modeling_utils import file_damage

    directory = Path(directory)
    damaged = []
    state = directory / "trainer_state.json"
    try:
        content = json.loads(state.read_text(encoding="utf-8"))
        if not isinstance(content, dict) or "global_step" not in content:
            damaged.append(f"{state.name}: no global_step in it")
    except FileNotFoundError:
        damaged.append(f"{state.name}: missing")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        damaged.append(f"{state.name}: not valid JSON ({e})")
    for file in sorted(directory.rglob("*")):
        if file.is_file() and file.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            why = file_damage(file)
            if why:
                damaged.append(f"{file.relative_to(directory)}: {why}")
    return damaged


def _read_checkpoint_dir(path: Path) -> Path:
    damage = checkpoint_damage(path)
    if damage:
        raise CheckpointError("; ".join(damage))
    return path


def resume_checkpoint(args, is_main: bool = True, own_files: Sequence[str] = ("runs",)) -> Optional[str]:
    """The checkpoint a run continues from, or None to start from the beginning: the one definition for every
    entry point on the Trainer (``internvl_g``, ``internvl_chat``).

    ``args.resume_from_checkpoint`` when given (it must exist); else the newest ``checkpoint-<step>`` in
    ``args.output_dir`` that :class:`CheckpointCompleteCallback` marked complete and whose files can be read
    (:func:`checkpoint_damage`), so the command that was interrupted resumes when run again. Newer checkpoints left
    incomplete by the interruption are deleted, and newer damaged ones (a file truncated or overwritten after
    the checkpoint was complete) renamed ``damaged-checkpoint-<step>``, each with a log line naming it (by the
    main process; the Trainer's rotation would mistake them for good ones). If every complete checkpoint is
    damaged, that is an error listing them (the skipping itself is :func:`~internvl.train.checkpoints.
    load_latest_checkpoint`, as for the hand-written loops). An ``output_dir`` with files but no complete
    checkpoint is an error unless ``args.overwrite_output_dir`` (``own_files``, what an earlier attempt of the
    run itself leaves there, such as its log, do not count), or unless it holds the final ``trainer_state.json``
    of a run (:func:`finished_run` then tells whether there is anything left to do).
    """
    from .checkpoints import load_latest_checkpoint

    if is_main:
        hold_output_dir(args.output_dir)
    if args.resume_from_checkpoint:
        path = Path(args.resume_from_checkpoint)
        if not path.is_dir():
            raise MissingFileError(f"--resume_from_checkpoint {path}: no such directory")
        return str(path)
    output_dir = Path(args.output_dir)
    if not output_dir.is_dir():
        return None
    marked = []
    for step, path in reversed(_checkpoints(output_dir)):
        if (path / COMPLETE_MARKER).is_file():
            marked.append(path)
        elif is_main:
            logger.warning("deleting %s: the run that wrote it stopped before it was complete", path)
            shutil.rmtree(path)
    damaged = {}
    found = load_latest_checkpoint(marked, load=_read_checkpoint_dir, on_skip=damaged.__setitem__)
    if found is not None:
        complete = found[0]
        for path, why in damaged.items():
            if is_main:
                target = path.with_name(f"damaged-{path.name}")
                suffix = 1
                while target.exists():
                    target, suffix = path.with_name(f"damaged-{path.name}.{suffix}"), suffix + 1
                path.rename(target)
                logger.warning("resuming from %s instead of the newer %s, which is damaged (%s); it is kept as %s "
                               "(delete it when you have looked)", complete, path, " ".join(why.split()), target)
        return str(complete)
    finished = _read_trainer_state(output_dir / "trainer_state.json") is not None  # see finished_run
    if not (args.overwrite_output_dir or finished) and is_main and any(
            p for p in output_dir.iterdir() if not _CHECKPOINT.match(p.name) and p.name not in (*own_files, RUN_LOCK)):
        _release_output_dir(output_dir)  # refused: leave the directory as it was
        raise ConfigError(f"--output_dir {output_dir} already exists, holds files and no complete checkpoint to "
                          "resume from; pass --overwrite_output_dir True to write into it anyway, or choose a new one")
    return None


_HELD: dict = {}  # output directory -> the open descriptor of its RUN_LOCK, for the life of the process


def hold_output_dir(output_dir: str | os.PathLike) -> None:
    """Hold ``output_dir`` for this process (an advisory ``flock`` on its ``.run.lock``, released when the process
    ends, however it ends): a second run started on the same directory stops with one line, instead of taking the
    first run's checkpoint in progress for an interrupted one and deleting it. Called by the main process of a
    run (:func:`resume_checkpoint` does); again in the same process, it does nothing."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return
    path = Path(output_dir).resolve()
    if path in _HELD:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"--output_dir {output_dir} is in use by another run (process {holder}); wait for it to "
                          "end, or choose another --output_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[path] = fd


def _release_output_dir(output_dir: Path) -> None:
    fd = _HELD.pop(Path(output_dir).resolve(), None)
    if fd is not None:
        (Path(output_dir) / RUN_LOCK).unlink(missing_ok=True)
        os.close(fd)


def _read_trainer_state(path: Path) -> Optional[dict]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return content if isinstance(content, dict) else None


def finished_run(trainer) -> Optional[int]:
    """The last step, when ``trainer.args.output_dir`` already holds the whole run ``trainer`` would train (the
    ``trainer_state.json`` saved after the final model, at or past the run's last step), else None. Running a
    finished command again then has nothing to do (resuming at the last step, transformers 5 trains one more, and
    the results of the run would be overwritten by those of an empty one); a finished run is logged in one line
    that says so (the entry point then returns without training, its ``train_results.json`` untouched). A state
    file that cannot be read is not a finished run."""
    state = _read_trainer_state(Path(trainer.args.output_dir) / "trainer_state.json")
    step = state.get("global_step") if state is not None else None
    if not isinstance(step, int):
        return None
    args = trainer.args
    if args.max_steps > 0:
        total = args.max_steps
    else:
        updates = math.ceil(len(trainer.get_train_dataloader()) / args.gradient_accumulation_steps)
        total = math.ceil(args.num_train_epochs * updates)
    if step < total:
        return None
    logger.info("%s already holds this run, complete at step %d: nothing to do (its results are kept; to train "
                "again, choose a new --output_dir)", args.output_dir, step)
    return step


class CheckpointCompleteCallback(TrainerCallback):
    """After every process has finished writing ``checkpoint-<step>``, the main process adds
    :data:`COMPLETE_MARKER` to it: a checkpoint without it was interrupted and is never resumed from."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if directory.is_dir():
                temporary = directory / f".{COMPLETE_MARKER}.tmp"
                temporary.write_text(json.dumps({"global_step": state.global_step}) + "\n")
                os.replace(temporary, directory / COMPLETE_MARKER)
        return control


def read_deepspeed_config(path: str, keep_optimizer_groups: bool = False) -> dict:
    """The DeepSpeed JSON at ``path``, checked: it must exist and parse. With ``keep_optimizer_groups`` (the
    Trainer builds parameter groups with their own learning rates), an ``optimizer`` or ``scheduler`` block is an
    error: DeepSpeed would build its own optimizer, or its WarmupLR / WarmupDecayLR would write one learning rate
    into every group, silently undoing the per-group rates. Without it, a ``scheduler`` block is logged: it
    replaces ``--lr_scheduler_type``."""
    config_path = Path(path)
    config = read_json(config_path, "--deepspeed", kind=dict, error=ConfigError)
    for block in ("optimizer", "scheduler"):
        if block in config and keep_optimizer_groups:
            raise ConfigError(f"--deepspeed {config_path} has a '{block}' block, which would override the per-group "
                              f"learning rates (layer-wise decay); remove it so the Trainer's optimizer and "
                              "--lr_scheduler_type are used")
    if "scheduler" in config:
        logger.warning("--deepspeed %s: its 'scheduler' block (%s) replaces --lr_scheduler_type", config_path,
                       config["scheduler"].get("type"))
    return config


def _deepspeed_on_cpu(args) -> bool:
    if getattr(args, "hf_deepspeed_config", None) is None:
        return False
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name() == "cpu"  # where DeepSpeed runs (no GPU visible, or DS_ACCELERATOR=cpu)


def cpu_deepspeed_optimizer(args) -> bool:
    """For a ``--deepspeed`` run on the CPU whose config has an Adam / AdamW ``optimizer`` block (the chat
    configs, as upstream ships them): run it as torch's AdamW / Adam (DeepSpeed's ``torch_adam``) instead of
    DeepSpeed's FusedAdam, whose CPU version is a C++ op compiled on first use (minutes on a small machine). The
    change is made to the Trainer's in-memory copy of the config, never to the JSON file, and never when DeepSpeed
    runs on a GPU; an explicit ``torch_adam`` in the file is left as it is. True when it changed the optimizer."""
    if not _deepspeed_on_cpu(args):
        return False
    optimizer = args.hf_deepspeed_config.config.get("optimizer")
    if not isinstance(optimizer, dict) or str(optimizer.get("type", "")).lower() not in ("adam", "adamw"):
        return False
    params = optimizer.setdefault("params", {})
    if "torch_adam" in params:
        return False
    params["torch_adam"] = True
    logger.info("DeepSpeed on the CPU: the config's %s optimizer runs as torch.optim's (torch_adam), not as "
                "DeepSpeed's FusedAdam, which would compile a C++ op", optimizer.get("type"))
    return True


# The C++ op DeepSpeed's CPU backend loads at every start (deepspeed.comm's TorchBackend), compiled on first use.
_CPU_OPS = ("ShareMemCommBuilder",)


def build_deepspeed_cpu_ops() -> list[str]:
    """Compile (first call on a machine) or load the C++ op(s) DeepSpeed loads when it starts on the CPU, as
    DeepSpeed would: into ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), where every later run
    with this DeepSpeed finds them (another environment's DeepSpeed rebuilds them there). Logs one line before a build, naming the op and the directory. Returns the names of the ops it
    built now; empty when they were there, installed with DeepSpeed, or not compatible (DeepSpeed skips those)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from torch.utils.cpp_extension import _get_build_directory

    built = []
    for class_name in _CPU_OPS:
        builder = get_accelerator().create_op_builder(class_name)
        if builder is None or installed_ops.get(builder.NAME) or not deepspeed.ops.__compatible_ops__.get(
                builder.NAME, False):
            continue
        directory = Path(_get_build_directory(builder.NAME, verbose=False))
        ninja = directory / "build.ninja"
        # torch rebuilds when the build commands change, e.g. the op was built there from another environment's
        # DeepSpeed (the sources' paths are in the commands)
        if not any(directory.glob(f"{builder.NAME}*.so")) or not ninja.is_file() or str(
                Path(deepspeed.ops.__file__).parent) not in ninja.read_text(errors="replace"):
            logger.info("DeepSpeed on the CPU: compiling its C++ op %s into %s (once per machine, a few minutes on "
                        "a small one; later runs load it)", builder.NAME, directory)
            built.append(builder.NAME)
        builder.load(verbose=False)
    return built


def prepare_deepspeed_on_cpu(args) -> None:
    """What a ``--deepspeed`` run on the CPU needs before the Trainer starts DeepSpeed: the optimizer of
    :func:`cpu_deepspeed_optimizer`, and :func:`build_deepspeed_cpu_ops` (the one-time build, announced). Nothing
    for a run without DeepSpeed or with DeepSpeed on a GPU."""
    if _deepspeed_on_cpu(args):
        cpu_deepspeed_optimizer(args)
        build_deepspeed_cpu_ops()


@contextlib.contextmanager
def models_built_whole(args):
    """Inside the block ``from_pretrained`` builds whole models even when ``args`` name a ZeRO-3 config
    (transformers partitions every model it builds while the Trainer's DeepSpeed config is registered):
    for the reload after training that merges LoRA and saves."""
    config = getattr(args, "hf_deepspeed_config", None)
    if config is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(config)


def zero3_checkpoint_options(args) -> dict:
    """Extra ``torch.utils.checkpoint`` options for a run with ``args``: under ZeRO-3, no check of the recomputed
    tensors' shapes. That check looks at the weights after DeepSpeed has partitioned them again (shape [0]) and
    fails although the recomputation saw them whole (seen with transformers 4.51)."""
    config = getattr(args, "hf_deepspeed_config", None)
    return {"determinism_check": "none"} if config is not None and config.is_zero3() else {}


def apply_zero3_checkpoint_options(args) -> None:
    """Add :func:`zero3_checkpoint_options` to the checkpointing options the Trainer passes to the model."""
    options = zero3_checkpoint_options(args)
    for name in ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"):  # 4.x, 5.x spellings
        if options and isinstance(getattr(args, name, None), dict):
            setattr(args, name, {**getattr(args, name), **options})


def weights_dtype(args):
    """The dtype to load the weights in for ``args``: under DeepSpeed with ``--bf16`` / ``--fp16``, that dtype (its
    optimizer keeps the float32 master weights: half the memory of loading float32, the same training); otherwise
    float32, with ``--bf16`` / ``--fp16`` computing under autocast."""
    import torch

    from .precision import precision_policy

    half = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    return precision_policy(half, trains=True, master_weights_elsewhere=bool(args.deepspeed)).weights


def fit_loader_to_machine(training_args) -> None:
    """At most one data-loader worker per available CPU (:func:`internvl.data.workers.usable_workers`), and no
    pinned memory without an accelerator (nothing to copy it to; torch warns at every data loader)."""
    from ..data.workers import usable_workers

    training_args.dataloader_num_workers = usable_workers(training_args.dataloader_num_workers,
                                                          "--dataloader_num_workers")
    if training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False
