"""Checkpoint file I/O, below the models: atomic writes, ``torch.load`` whose errors name the file, the state
dict inside whatever a trainer wrapped it in, and checked JSON reading (:func:`read_json`). Imports nothing of the
library but its errors, and torch only where a function needs it."""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import secrets
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # torch is imported by the functions that need it: reading JSON does not
    import torch


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a truncated file behind.

    Writes a temp file in the same directory (so the rename stays on one file system), fsyncs it
    and renames it over ``path``: a crash or an error mid-save leaves the previous file intact.
    The file gets the permissions of any new file (0666 less the umask), so colleagues sharing a
    cluster file system can read checkpoints whenever they can read the run folder.
    """
    import torch

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
    import torch

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
    import torch

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


def _describe_json(content: Any) -> str:
    if isinstance(content, dict):
        return f"an object with keys {sorted(map(str, content))[:10]}"
    return f"a JSON {type(content).__name__}"


def read_json(path: str | os.PathLike, what: str = "JSON file", expected: str | None = None,
              kind: type | tuple[type, ...] | None = None, error: type[Exception] | None = None,
              hint: str | None = None) -> Any:
    """The content of the JSON file ``path``, checked, with errors that name it: the one reader of JSON
    inputs (annotation files, argument files, DeepSpeed configs, prompt files).

    ``what`` names the file in messages ("annotation file", "--deepspeed"); ``expected`` says what it should
    hold ("a COCO-format caption file: ..."); ``kind`` (``dict``, ``list``) is the type the top level must
    have; ``error`` is the class of a parse or type error (default :class:`~internvl.errors.DataError`;
    :class:`~internvl.errors.ConfigError` for configuration files); ``hint`` is appended to a missing-file
    message (where to get the file). A missing file is a :class:`~internvl.errors.MissingFileError`::

        annotation file not found: data/coco/x.json (expected ...; see data/README.md)
        annotation file data/coco/x.json is not valid JSON (Expecting value: line 1 column 1 (char 0)); expected ...
        annotation file data/coco/x.json: expected ...; found a JSON list
    """
    from .errors import DataError, MissingFileError

    error = error or DataError
    path = Path(path)
    expectation = f"; expected {expected}" if expected else ""
    if not path.is_file():
        detail = "; ".join(part for part in (f"expected {expected}" if expected else "", hint or "") if part)
        raise MissingFileError(f"{what} not found: {path}" + (f" ({detail})" if detail else ""))
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid JSON ({e}){expectation}") from None
    if kind is not None and not isinstance(content, kind):
        wanted = expected or " or ".join(f"a JSON {'object' if k is dict else k.__name__}"
                                         for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise error(f"{what} {path}: expected {wanted}; found {_describe_json(content)}")
    return content


def append_json_line(path: str | os.PathLike, record: Any) -> None:
    """Append ``record`` to ``path`` as one JSON line, with one ``write`` on an ``O_APPEND`` descriptor, so
    runs appending to the same results file at once never interleave. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
