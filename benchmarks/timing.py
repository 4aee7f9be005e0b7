"""The one stopwatch of the benchmarks: wall time of a call, with CUDA work finished on both sides."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch


def timed(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[float, Any]:
    """``(seconds, fn())``; on CUDA the device is synchronised before and after, so queued kernels count."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out
