"""Checkpoints of the classification pipeline: reading published and own files, saving, resuming.

Own checkpoints (``<OUTPUT>/ckpt_epoch_<epoch>.pth``, as upstream, plus ``ckpt_step_<update>.pth``
inside an epoch with ``TRAIN.SAVE_STEPS``, and ``ckpt_epoch_best.pth``) are written atomically and
hold only what training changes when the backbone is frozen (``norm.*``, ``head.*``: a few MB, not
a 6B-parameter copy per epoch), under the upstream keys::

    model, optimizer, lr_scheduler, epoch, max_accuracy, model_ema, max_accuracy_ema, amp, config
    + next_step (micro-batches already done in epoch ``epoch + 1``), global_step (optimizer updates)

:class:`TrainState` is what such a file saves and a resumed run restores; :func:`auto_resume` finds
the most advanced readable checkpoint of a run folder, passing over a damaged one with a warning.

``config`` is the YAML text of the run's config (plain data, so ``torch.load(weights_only=True)``
reads the file). The published ``intern_vit_6b_224px_head.pth`` pickles upstream's yacs config
object instead; :func:`read_checkpoint` reads it with an unpickler that allows nothing but the
tensor types of ``weights_only`` loading plus that one config class (turned into a dict).
"""
from __future__ import annotations

import _compat_pickle
import logging
import pickle
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from internvl.errors import CheckpointError
from internvl.fileio import load_checkpoint, load_torch_file, unwrap_state_dict
from internvl.train.checkpoints import load_latest_checkpoint, save_checkpoint

from .optim import HeadEma

logger = logging.getLogger(__name__)

STEP_PATTERN = "ckpt_step_*.pth"


class _ConfigAsDict(dict):
    """Stands in for ``yacs.config.CfgNode`` while unpickling: its items, none of its behaviour."""

    def __setstate__(self, state):  # CfgNode's flags (__immutable__ ...): not needed to read values
        pass


def _allowed_globals() -> dict:
    from torch._weights_only_unpickler import _get_allowed_globals
    return _get_allowed_globals()


class _ConfigTolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Protocol-2 pickles (torch.save's default) name Python 2 modules: map them as pickle itself does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == ("yacs.config", "CfgNode"):
            return _ConfigAsDict
        allowed = _allowed_globals()
        if f"{module}.{name}" in allowed:
            return allowed[f"{module}.{name}"]
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only tensors, containers and a yacs "
                                     "config are loaded from a checkpoint")


_config_tolerant_pickle = types.SimpleNamespace(Unpickler=_ConfigTolerantUnpickler, load=pickle.load,
                                                __name__="config_tolerant_pickle")


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict on the CPU, from our own files or upstream's (which pickle a yacs config).

    A missing or damaged file is an error naming it (:func:`internvl.fileio.load_torch_file`)."""
    path = Path(path)
    try:
        return load_checkpoint(path)
    except pickle.UnpicklingError:  # weights_only refused an object: upstream's pickled yacs config?
        pass
    try:
        state = load_torch_file(path, weights_only=False, pickle_module=_config_tolerant_pickle)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a checkpoint dict")
    return _plain(state)


def model_tensors(checkpoint: dict, path) -> dict:
    """The model's tensors of a checkpoint (:func:`internvl.fileio.unwrap_state_dict`: under ``model`` as
    ours and upstream's, ``module`` as DeepSpeed's, or the dict itself)."""
    return unwrap_state_dict(checkpoint, path)


# --------------------------------------------------------------------------- saving and resuming
@dataclass
class TrainState:
    """What a training checkpoint saves and a resumed run restores: the trained tensors, optimizer,
    AMP scaler and EMA, and where the run stands."""

    classifier: Any  # InternViTClassifier (not wrapped in DDP)
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler
    ema: Optional[HeadEma]
    config: Any  # the run's yacs config
    epoch: int = 0  # the epoch being trained
    next_step: int = 0  # micro-batches of ``epoch`` already done (a mid-epoch resume starts there)
    global_step: int = 0  # optimizer updates so far: the learning rate is a function of it
    max_accuracy: float = 0.0
    max_accuracy_ema: float = 0.0

    def checkpoint(self, completed_epoch: int, next_step: int = 0) -> dict:
        """The checkpoint dict, upstream's keys: ``completed_epoch`` is the last whole epoch, and
        ``next_step`` micro-batches of the one after it are done."""
        return {"model": self.classifier.trainable_state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": {"num_updates": self.global_step}, "epoch": completed_epoch,
                "next_step": next_step, "global_step": self.global_step, "max_accuracy": self.max_accuracy,
                "max_accuracy_ema": self.max_accuracy_ema,
                "amp": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "model_ema": self.ema.state_dict() if self.ema is not None else None, "config": self.config.dump()}

    def save(self, output: Path, name: str, completed_epoch: int, next_step: int = 0,
             keep_last: Optional[int] = None) -> Path:
        path = save_checkpoint(self.checkpoint(completed_epoch, next_step), output, name, keep_last=keep_last)
        logger.info("%s saved", path)
        return path

    def restore(self, checkpoint: dict, source: str | Path, updates_per_epoch: int) -> bool:
        """Continue from a training checkpoint whose model tensors are already loaded: optimizer, scaler,
        EMA, counters. A released head (no optimizer state) restores nothing; returns whether it did."""
        if "optimizer" not in checkpoint or "epoch" not in checkpoint:
            return False
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as e:
            raise CheckpointError(f"{source}: its optimizer state does not fit this run ({e}); to start a new run "
                                  "from its weights, pass it as --pretrained instead") from None
        if checkpoint.get("amp"):
            self.scaler.load_state_dict(checkpoint["amp"])
        if self.ema is not None and isinstance(checkpoint.get("model_ema"), dict):
            self.ema.load_state_dict(checkpoint["model_ema"])
        accum = max(self.config.TRAIN.ACCUMULATION_STEPS, 1)
        self.epoch = checkpoint["epoch"] + 1
        self.next_step = checkpoint.get("next_step", 0)
        self.global_step = checkpoint.get("global_step", self.epoch * updates_per_epoch + self.next_step // accum)
        self.max_accuracy = checkpoint.get("max_accuracy", 0.0)
        self.max_accuracy_ema = checkpoint.get("max_accuracy_ema", 0.0)
        logger.info("=> resumed %s: epoch %d, batch %d, update %d", source, self.epoch, self.next_step,
                    self.global_step)
        return True


def remove_step_checkpoints(output: Path) -> None:
    """An epoch checkpoint supersedes the mid-epoch ones before it."""
    for path in Path(output).glob(STEP_PATTERN):
        if re.fullmatch(r"ckpt_step_\d+\.pth", path.name):
            path.unlink()


def resume_candidates(output: Path, updates_per_epoch: int) -> list[Path]:
    """The run's epoch and step checkpoints, most advanced first: ``ckpt_epoch_<e>`` counts as (e + 1)
    epochs of updates, ``ckpt_step_<n>`` as n updates (an epoch file wins a tie)."""
    ranked = []
    for path in Path(output).glob("ckpt_*.pth"):
        if match := re.fullmatch(r"ckpt_epoch_(\d+)\.pth", path.name):
            ranked.append(((int(match[1]) + 1) * updates_per_epoch, 1, path))
        elif match := re.fullmatch(r"ckpt_step_(\d+)\.pth", path.name):
            ranked.append((int(match[1]), 0, path))
    return [path for *_, path in sorted(ranked, reverse=True)]


def auto_resume(output: Path, updates_per_epoch: int) -> tuple[Optional[Path], dict]:
    """``TRAIN.AUTO_RESUME``: the most advanced checkpoint in ``output`` that can be read, and its content;
    a damaged one (a crash or a full disk mid-copy) is skipped with a warning saying which and why."""
    found = load_latest_checkpoint(resume_candidates(output, updates_per_epoch), load=read_checkpoint)
    return found if found is not None else (None, {})
