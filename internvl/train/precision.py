"""Precision: dtype names of the ``--dtype`` flags, the default dtype of a device, autocast where it applies, and
the one policy that picks the weights' dtype and the autocast dtype of a run (:func:`precision_policy`)."""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import ContextManager

import torch

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
    from ..errors import ConfigError

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


@dataclasses.dataclass(frozen=True)
class Precision:
    """What a run keeps its weights in and what it computes in: ``autocast`` None means the weights' dtype."""

    weights: torch.dtype
    autocast: torch.dtype | None = None

    @property
    def loss_scaling(self) -> bool:
        """A GradScaler is needed for fp16 autocast only: fp16 gradients underflow without it, while bf16 has
        fp32's exponent range and fp32 needs nothing."""
        return needs_loss_scaling(self.autocast)


def needs_loss_scaling(autocast_dtype: torch.dtype | None) -> bool:
    """True for fp16 autocast (see :attr:`Precision.loss_scaling`)."""
    return autocast_dtype == torch.float16


def precision_policy(half: torch.dtype | None, *, trains: bool, device: torch.device | str | None = None,
                     master_weights_elsewhere: bool = False) -> Precision:
    """The suite's one precision rule, given the half precision a run asks for (``half``: fp16 / bf16, or None /
    fp32 for none):

    * no half precision, or a ``device`` that is not a GPU: float32 weights, no autocast (CPUs run fp32);
    * frozen weights (``trains=False``): stored in ``half`` (upstream's ``ToBFloat16Hook``), no autocast;
    * trained weights whose float32 master copy lives elsewhere (``master_weights_elsewhere``: DeepSpeed's
      optimizer with ``--bf16`` / ``--fp16``): stored in ``half``, half the memory, the same training;
    * trained weights otherwise: float32 weights computing in ``half`` under autocast (exact optimizer updates).

    Used by the HF Trainer apps (:func:`internvl.train.hf.weights_dtype`), classification (``AMP_OPT_LEVEL`` /
    ``AMP_TYPE``) and segmentation (``--backbone-dtype auto``).
    """
    if half in (None, torch.float32) or (device is not None and torch.device(device).type != "cuda"):
        return Precision(torch.float32)
    if not trains or master_weights_elsewhere:
        return Precision(half)
    return Precision(torch.float32, half)
