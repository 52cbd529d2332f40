"""What the project writes and removes on disk: safe names, folders removed only inside their root, state files
written atomically and read back without trusting them, and a lock on an output folder.

- `check_name`: a name that becomes a path component (a pipeline method, setting, seed or run id) must match
  `SAFE_NAME`: letters, digits and ``. _ - + =``, not starting with a dot; so no ``/``, no ``..``.
- `remove_tree`: `shutil.rmtree` of a folder that resolves strictly inside a given root, else `UnsafePathError`.
- `atomic_write_text` / `atomic_write_json`: write a temporary file next to the target, flush it to disk, then
  rename it over the target (`os.replace` is atomic on POSIX and Windows): a crash or a full disk leaves the old
  file or the new one, never half of one.
- `read_json_record`: a state file read back; an unreadable one (cut, not JSON, not an object) is ``None`` with a
  warning naming the file, so the caller treats it as "not finished".
- `OutputLock`: ``<folder>/_dmpo.lock`` holding the owner's pid, host and command; a second run on the same folder
  fails at once naming them (`OutputLockedError`); a lock left by a dead process on the same host is taken over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


__all__ = [
    "LOCK_FILE",
    "SAFE_NAME",
    "OutputLock",
    "OutputLockedError",
    "UnsafePathError",
    "atomic_write_json",
    "atomic_write_text",
    "check_inside",
    "check_name",
    "read_json_record",
    "remove_tree",
]

logger = logging.getLogger(__name__)

#: A name that may become one path component.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
LOCK_FILE = "_dmpo.lock"  # "_*" files are left out of what `Trainer.push_to_hub` uploads


class UnsafePathError(ValueError):
    """A name or a path that would reach outside the folder it belongs in."""


class OutputLockedError(OSError):
    """Another live run holds the output folder."""


def check_name(value: Any, what: str) -> str:
    """`value` as a string if it is a safe path component (`SAFE_NAME`), else `UnsafePathError` naming `what`."""
    text = str(value)
    if not SAFE_NAME.fullmatch(text) or len(text) > 128:
        raise UnsafePathError(
            f"{what} {text!r} cannot name a folder: use letters, digits and . _ - + = (at most 128 characters, "
            "not starting with '.', no '/')"
        )
    return text


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """`path` resolved, if it lies strictly inside `root` (resolved, symlinks followed), else `UnsafePathError`."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved == base or base not in resolved.parents:
        raise UnsafePathError(f"{path} is not inside {root}: refusing to create or remove it")
    return resolved


def remove_tree(path: str | os.PathLike, root: str | os.PathLike) -> None:
    """Remove the folder `path` (and what it holds) if it lies strictly inside `root`; a link is never followed."""
    check_inside(path, root)
    if Path(path).is_symlink():
        raise UnsafePathError(f"{path} is a symbolic link: refusing to remove what it points to")
    shutil.rmtree(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` so that it holds the old content or all of the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 1) -> None:
    """`atomic_write_text` of ``json.dumps(value)`` (values JSON cannot hold are written with `str`)."""
    atomic_write_text(path, json.dumps(value, indent=indent, default=str))


def read_json_record(path: str | os.PathLike, what: str = "record") -> dict[str, Any] | None:
    """The JSON object in `path`, or ``None`` when there is no file or it cannot be read as one (a warning names the
    file and why: a crash or a full disk cut it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        logger.warning(f"{path}: unreadable {what} ({err}); treating it as not finished")
        return None
    if not isinstance(value, dict):
        logger.warning(f"{path}: unreadable {what} (a JSON {type(value).__name__}); treating it as not finished")
        return None
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class OutputLock:
    """An exclusive lock on an output folder, for one training or one pipeline run (a context manager).

    The lock is the file ``<folder>/_dmpo.lock``, created exclusively, holding ``{"pid", "host", "command",
    "started"}``. `acquire` raises `OutputLockedError` naming the holder when another live process holds it; a lock
    whose process is gone (same host, pid not running) is taken over with a warning. A lock of another host is never
    taken over: remove the file by hand once that run is over.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self._held = False

    def _owner(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }

    def acquire(self) -> OutputLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_json_record(self.path, "lock file") or {}
                pid, host = holder.get("pid"), holder.get("host")
                if host == socket.gethostname() and isinstance(pid, int) and pid == os.getpid():
                    self._held = False  # this process holds it already (e.g. a pipeline's stage); leave it be
                    return self
                if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
                    logger.warning(f"{self.path}: taking over the lock of process {pid}, which is no longer running")
                    self.path.unlink(missing_ok=True)
                    continue
                if not holder:
                    raise OutputLockedError(
                        f"{self.folder} is locked by {self.path}, which cannot be read: if no other run uses this "
                        "folder, delete that file"
                    ) from None
                raise OutputLockedError(
                    f"{self.folder} is in use by another {self.what}: process {pid} on {host} (started "
                    f"{holder.get('started')}: {holder.get('command')}); wait for it, choose another output folder, "
                    f"or delete {self.path} if that run is over"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self._owner(), handle)
            self._held = True
            return self
        raise OutputLockedError(f"{self.folder}: could not take the lock {self.path}")

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
