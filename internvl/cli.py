"""How every command-line entry point of the suite ends: one behaviour for errors everywhere.

    from internvl.cli import run_main

    def main(argv=None) -> int | None: ...

    if __name__ == "__main__":
        raise SystemExit(run_main(main))

* A :class:`internvl.errors.UserError` (bad path, malformed data, unknown config key) prints one line,
  ``error: <message>``, and exits with status 1. ``INTERNVL_DEBUG=1`` adds its traceback.
* Any other exception is a bug: its full traceback is shown, exit status 1.
* Ctrl-C exits with status 130 and one line.

Where :func:`internvl.train.distributed.setup_logging` has installed its handlers, the line or traceback goes
through them, so it reaches the run's log file as well as stderr; before that, stderr only.
This module imports nothing heavy, so ``--help`` stays fast.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable, Optional

from .errors import UserError

__all__ = ["run_main", "DEBUG_ENV"]

DEBUG_ENV = "INTERNVL_DEBUG"
logger = logging.getLogger("internvl")


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _logging_ready() -> bool:
    """True when setup_logging's handlers (stderr + log file) are installed."""
    return any(getattr(h, "_internvl_runtime", False) for h in logging.getLogger().handlers)


def report_error(err: BaseException) -> None:
    """Show ``err`` as :func:`run_main` does (one line for a user error, a traceback for a bug)."""
    user = isinstance(err, UserError)
    message = f"error: {err}" if user else f"unexpected error (a bug; please report it with this traceback): {err!r}"
    show_traceback = not user or _debug()
    if _logging_ready():
        logger.error(message, exc_info=err if show_traceback else None)
        return
    if show_traceback:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(message, file=sys.stderr, flush=True)


def run_main(main: Callable[..., Optional[int]], *args, **kwargs) -> int:
    """Call ``main(*args, **kwargs)`` and turn its outcome into an exit status (see the module doc)."""
    try:
        status = main(*args, **kwargs)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    except SystemExit:
        raise  # argparse's usage errors and --help keep their own status
    except Exception as err:  # noqa: BLE001 - the one place every error of a run ends up
        report_error(err)
        return 1
    return status if isinstance(status, int) else 0
