"""Errors a user can fix, told apart from bugs.

Every command-line entry point runs under :func:`internvl.cli.run_main`. An exception that is a
:class:`UserError` (a missing file, a malformed line, a config key that does not exist, a damaged
checkpoint) ends the run with one line, ``error: <message>``, whose message names the file, line,
flag or key and says what to do; any other exception is a bug and is shown with its traceback.
Both reach stderr and the run's log file.

The classes also derive from the built-in exception a caller would expect (``ValueError``,
``FileNotFoundError``, ``OSError``), so ``except ValueError`` around library calls keeps working.
"""
from __future__ import annotations

import contextlib

__all__ = ["UserError", "ConfigError", "DataError", "MissingFileError", "CheckpointError", "MissingDependencyError",
           "from_workers"]


class UserError(Exception):
    """Base class: the run cannot go on because of its inputs, and the message says which and why."""


class ConfigError(UserError, ValueError):
    """A config file, config key, command-line flag or environment variable is wrong."""


class DataError(UserError, ValueError):
    """A dataset file, line or sample is wrong (the message gives ``file:line`` where there is one)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the run needs does not exist."""


class CheckpointError(UserError, OSError):
    """A checkpoint is incomplete, damaged, or of another format than the one asked for."""


class MissingDependencyError(UserError, ImportError):
    """An optional package the requested feature needs is not installed (the message says what to install)."""


@contextlib.contextmanager
def from_workers():
    """Re-raise a :class:`UserError` that came from a DataLoader worker with its own one-line message.

    PyTorch re-raises a worker's exception as the same type with the message ``Caught X in DataLoader worker
    process 0. Original Traceback (most recent call last): ...``; the user needs only its last line."""
    try:
        yield
    except UserError as err:
        text = str(err)
        if text.startswith("Caught ") and "Original Traceback" in text:
            last = text.strip().splitlines()[-1]
            raise type(err)(last.split(": ", 1)[1] if ": " in last else last) from None
        raise
