"""How every `dmpo-trl` command reports a failure: one line on stderr, ``<command>: <what went wrong>``, exit code 1.

The line names what failed, the file (and the row, counted from 0 within that file) where there is one, and what to
do. The traceback is shown only with ``dmpo-trl --debug COMMAND ...`` (or ``COMMAND ... --debug`` for every command
but `train`, whose ``--debug`` is `transformers.TrainingArguments.debug`) or with ``DMPO_TRL_DEBUG=1`` in the
environment. Errors nobody anticipated (not a data, file, value or import error) say so and how to see the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


__all__ = ["DEBUG_ENV", "debug_requested", "describe", "report_errors"]

DEBUG_ENV = "DMPO_TRL_DEBUG"
#: Errors whose message is the whole story (data, files, values, missing packages).
EXPECTED = (ValueError, OSError, ImportError, UnicodeError)


def debug_requested(flag: bool = False) -> bool:
    """True if `flag` is set or ``$DMPO_TRL_DEBUG`` is a true value (1, true, yes, on)."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def describe(err: BaseException) -> str:
    """The error as one line: its message (whitespace collapsed); file errors with their path; unexpected errors
    with their type and the way to the traceback."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
    else:
        text = str(err) or type(err).__name__
    text = " ".join(text.split())
    if isinstance(err, KeyError) or not isinstance(err, EXPECTED):
        return f"{type(err).__name__}: {text} (unexpected; rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
    return text


def report_errors(prog: str, fn: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run `fn` and return its exit code; on an exception print ``"<prog>: <describe(err)>"`` to stderr and return 1
    (130 for Ctrl-C), or re-raise it when `debug_requested(debug)`."""
    debug = debug_requested(debug)
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"{prog}: {describe(err)}", file=sys.stderr)
        return 1
