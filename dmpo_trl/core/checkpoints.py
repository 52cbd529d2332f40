"""Checkpoints that are complete, saves that say why they failed, and no token on disk.

- `last_complete_checkpoint`: the newest ``checkpoint-N`` of an output folder that holds a readable
  ``trainer_state.json`` (the last file `Trainer` writes into a checkpoint); newer ones without it (a save cut by a
  crash or a full disk) are skipped with a warning naming them, so ``resume_from_checkpoint=True`` resumes from the
  last complete one.
- `explain_save_errors`: a context manager around a save that turns "no space left on device" (an `OSError` with
  ``ENOSPC``, or torch's ``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos``, which is what a
  full disk gives inside `torch.save`) into an `OSError` naming the cause and the folder.
- `move_hub_token_to_env`: ``hub_token`` leaves the training arguments (which `Trainer` pickles into
  ``training_args.bin`` of the output folder and of every checkpoint, folders a push uploads) for the ``HF_TOKEN``
  environment variable of this process, where the Hub client reads it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .files import read_json_record


__all__ = ["TOKEN_ENV", "explain_save_errors", "last_complete_checkpoint", "move_hub_token_to_env"]

logger = logging.getLogger(__name__)

TOKEN_ENV = "HF_TOKEN"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_STATE = "trainer_state.json"
#: What torch's zip writer says when a write comes up short (a full disk, a quota).
_SHORT_WRITE = ("unexpected pos", "file write failed", "no space left")


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` folder in `output_dir` holding a readable ``trainer_state.json``, or ``None``."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir())
    for _, path in reversed(found):
        if read_json_record(path / _STATE, _STATE) is not None:
            return str(path)
        logger.warning(
            f"{path} is incomplete (no readable {_STATE}: its save was cut, e.g. by a full disk): skipping it and "
            "resuming from the last complete checkpoint; delete it to silence this warning"
        )
    return None


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(marker in text for marker in _SHORT_WRITE)


@contextmanager
def explain_save_errors(folder: str | os.PathLike, what: str = "checkpoint") -> Iterator[None]:
    """Re-raise a full disk during the save of `what` into `folder` as an `OSError` naming both (other errors pass)."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if not _is_disk_full(err):
            raise
        try:
            existing = next(p for p in (Path(folder), *Path(folder).parents) if p.exists())
            free = f"{shutil.disk_usage(existing).free / 2**20:.0f} MiB free"
        except (OSError, StopIteration):
            free = "free space unknown"
        raise OSError(
            f"no space left on the device while saving the {what} to {folder} ({free}; {type(err).__name__}: "
            f"{str(err).strip()[:120]}): free space or choose another output_dir; the partial checkpoint is "
            "skipped when resuming",
        ) from err


def move_hub_token_to_env(args: Any) -> None:
    """Move ``args.hub_token`` into ``os.environ["HF_TOKEN"]`` (where the Hub client reads it) and clear it on
    `args`, so it is never pickled into ``training_args.bin``."""
    token = getattr(args, "hub_token", None)
    if token:
        os.environ[TOKEN_ENV] = token
        args.hub_token = None
