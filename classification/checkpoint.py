"""Checkpoints of the classification pipeline: reading published and own files, saving, resuming.

Own checkpoints (``<OUTPUT>/ckpt_epoch_<epoch>.pth``, as upstream, plus ``ckpt_step_<update>.pth``
inside an epoch with ``TRAIN.SAVE_STEPS``, and ``ckpt_epoch_best.pth``) are written atomically and
hold only what training changes when the backbone is frozen (``norm.*``, ``head.*``: a few MB, not
a 6B-parameter copy per epoch), under the upstream keys::

    model, optimizer, lr_scheduler, epoch, max_accuracy, model_ema, max_accuracy_ema, amp, config
    + next_step (micro-batches already done in epoch ``epoch + 1``), global_step (optimizer updates)

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
from pathlib import Path
from typing import Optional

import torch

from internvl.runtime import latest_checkpoint, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

EPOCH_PATTERN = "ckpt_epoch_*.pth"
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
    """A checkpoint dict on the CPU, from our own files or upstream's (which pickle a yacs config)."""
    path = Path(path)
    try:
        return load_checkpoint(path)
    except pickle.UnpicklingError:
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_config_tolerant_pickle)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a checkpoint dict")
    return _plain(state)


def model_tensors(checkpoint: dict, path) -> dict:
    """The model's tensors: under ``model`` (ours, upstream's), ``module`` (DeepSpeed), or the dict itself."""
    for key in ("model", "module", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise ValueError(f"{path}: no model tensors (expected a 'model' entry); keys: {sorted(checkpoint)[:8]}")


def save_training_state(output: Path, name: str, state: dict, keep_last: Optional[int] = None) -> Path:
    path = save_checkpoint(state, output, name, keep_last=keep_last)
    logger.info("%s saved", path)
    return path


def remove_step_checkpoints(output: Path) -> None:
    """An epoch checkpoint supersedes the mid-epoch ones before it."""
    for path in Path(output).glob(STEP_PATTERN):
        if re.fullmatch(r"ckpt_step_\d+\.pth", path.name):
            path.unlink()


def find_auto_resume(output: Path, updates_per_epoch: int) -> Optional[Path]:
    """The most advanced checkpoint in ``output``: ``ckpt_epoch_<e>`` counts as (e + 1) epochs of
    updates, ``ckpt_step_<n>`` as n updates."""
    epoch_file, step_file = latest_checkpoint(output, EPOCH_PATTERN), latest_checkpoint(output, STEP_PATTERN)
    candidates = []
    if epoch_file is not None:
        epoch = int(re.fullmatch(r"ckpt_epoch_(\d+)\.pth", epoch_file.name)[1])
        candidates.append(((epoch + 1) * updates_per_epoch, 1, epoch_file))
    if step_file is not None:
        candidates.append((int(re.fullmatch(r"ckpt_step_(\d+)\.pth", step_file.name)[1]), 0, step_file))
    return max(candidates)[2] if candidates else None
