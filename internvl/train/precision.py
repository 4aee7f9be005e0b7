"""Precision: dtype names of the ``--dtype`` flags, the default dtype of a device, and autocast where it applies."""
from __future__ import annotations

import contextlib
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
