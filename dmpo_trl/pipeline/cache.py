"""Cached, resumable stages: each stage writes into its own folder and finishes by writing ``stage.json``.

``stage.json`` holds the stage's *key* (every setting it depends on, and the ``run_id`` of each stage it reads
from), the key's hash, a ``run_id`` drawn when the stage ran, the stage's result (small JSON) and its run time. Running a stage whose folder has a
``stage.json`` with the same key hash returns the stored result without doing the work; a folder without one (an
interrupted stage) or with another key (changed settings or inputs) is emptied and the stage runs again. So an
interrupted pipeline resumes where it stopped, and changing a setting reruns exactly the stages that depend on it.

``stage.json`` is written atomically (`dmpo_trl.core.files.atomic_write_json`); one that cannot be read (cut by a crash or a
full disk) counts as "not finished", with a warning naming it. Every part of a stage name must be a safe folder name
(`dmpo_trl.core.files.check_name`), and a stage folder is created or emptied only inside the root.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dmpo_trl.core.files import atomic_write_json, check_inside, check_name, read_json_record, remove_tree


__all__ = ["StageRunner", "key_hash"]

STAGE_FILE = "stage.json"


def key_hash(key: Any) -> str:
    """A stable hash of a JSON-serialisable key."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class StageRunner:
    """Runs named stages under `root`, skipping those already done with the same key.

    Attributes:
        log: one entry per stage: name, whether it was read from the cache, wall-clock and CPU seconds (of this
            process, all threads) of the run that produced it.
    """

    def __init__(self, root: str | Path, *, verbose: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.verbose = verbose
        self.log: list[dict[str, Any]] = []
        self._start = time.perf_counter()

    def path(self, name: str) -> Path:
        """The folder of stage `name` (``/``-separated parts, each a safe name): refused unless inside the root."""
        for part in name.split("/"):
            check_name(part, f"stage name {name!r}: part")
        folder = self.root / name
        check_inside(folder, self.root)
        return folder

    def done(self, name: str, key: Any) -> dict[str, Any] | None:
        """The stored record of stage `name` if it finished with this key, else ``None``."""
        record = read_json_record(self.path(name) / STAGE_FILE, f"stage record of {name!r}")
        return record if record is not None and record.get("key_hash") == key_hash(key) else None

    def run(self, name: str, key: Any, fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run ``fn(folder, *args, **kwargs)`` unless stage `name` is done with `key`; returns the stage's record
        (``result``, ``key_hash``, ``run_id``, ``seconds``, ``finished``, ``cached``). Stages that read this stage's
        output put its ``run_id`` (new at every run) in their key, so they run again whenever it does."""
        record = self.done(name, key)
        elapsed = time.perf_counter() - self._start
        if record is not None:
            record["cached"] = True
            if any(entry["stage"] == name for entry in self.log):
                return record  # a stage shared by several runs (explore, pairs), already listed
            self.log.append(
                {"stage": name, "cached": True, "seconds": record["seconds"], "cpu_seconds": record.get("cpu_seconds")}
            )
            if self.verbose:
                print(f"=== [{elapsed:6.0f} s] {name}: cached ({record['seconds']:.0f} s when it ran)", flush=True)
            return record
        folder = self.path(name)
        if folder.exists():
            remove_tree(folder, self.root)  # an interrupted run or other settings: start the stage over
        folder.mkdir(parents=True)
        if self.verbose:
            print(f"\n=== [{elapsed:6.0f} s] {name}", flush=True)
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = fn(folder, *args, **kwargs)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        record = {
            "stage": name,
            "key": key,
            "key_hash": key_hash(key),
            "run_id": uuid.uuid4().hex[:12],
            "result": result,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        atomic_write_json(folder / STAGE_FILE, record)
        record["cached"] = False
        self.log.append({"stage": name, "cached": False, "seconds": seconds, "cpu_seconds": cpu_seconds})
        if self.verbose:
            print(f"    {name} done in {seconds:.0f} s", flush=True)
        return record
