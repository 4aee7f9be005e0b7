"""Numbered training checkpoints of the hand-written loops (classification, segmentation): write atomically,
keep the last N, and auto-resume from the newest one that can be read."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from ..fileio import atomic_save, load_checkpoint


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
                           load: Callable[[Path], Any] | None = None,
                           on_skip: Callable[[Path, str], None] | None = None) -> tuple[Path, Any] | None:
    """Auto-resume: ``(path, loaded)`` for the newest checkpoint that can be read, or None if there is none.

    ``candidates`` is a directory (its files matching ``pattern``, highest number first) or the paths
    to try, newest first. A file ``load`` (default :func:`load_checkpoint`) reports as damaged
    (:class:`~internvl.errors.CheckpointError`: cut short by a crash, a full disk, a copy that did not
    finish) is skipped with a warning naming it and why (or ``on_skip(path, why)`` instead, for a caller that
    says more in its own line), and the next newest is tried. If every one is damaged, that is an error listing
    them all, rather than a silent restart from scratch.
    """
    from ..errors import CheckpointError

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
            if on_skip is not None:
                on_skip(path, str(e))
                continue
            logging.getLogger(__name__).warning("auto-resume: skipping %s, it cannot be read (%s); trying the "
                                                "next newest checkpoint", path, e)
    if skipped:
        raise CheckpointError(f"none of the {len(skipped)} checkpoints to resume from can be read: "
                              f"{'; '.join(skipped)}. Delete them to start the run afresh, or resume from a "
                              "copy of your own")
    return None
