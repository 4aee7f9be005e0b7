"""How many DataLoader worker processes a run gets: the one rule of every data loader in the suite."""
from __future__ import annotations

import logging
import os

__all__ = ["available_cpus", "usable_workers"]

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which a scheduler or ``taskset`` narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def usable_workers(requested: int, flag: str = "--num_workers") -> int:
    """``requested`` DataLoader workers, at most one per available CPU: upstream's scripts ask for 4 to 10, and more
    workers than CPUs only compete for them (torch warns about it at every loader). The lowering is logged."""
    cpus = available_cpus()
    if requested <= cpus:
        return requested
    log.warning("%s %d lowered to %d, the CPUs available to this process", flag, requested, cpus)
    return cpus
