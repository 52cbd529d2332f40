"""Reference scores computed once: a keyed store reused across epochs and runs, and when precomputing is exact.

The reference score ``S_ref`` of a trajectory depends on nothing but its tokens (prompt, trajectory, action index of
every token, ``T``), the truncation (``max_length``), ``gamma``, the masking rules and the reference model (its
weights, dtype and mixed precision). `ReferenceScoreStore` keeps ``(S_ref_chosen, S_ref_rejected)`` per pair in one
SQLite file per *context* (a hash of everything but the pair), keyed by a hash of the pair's tokenized columns. So a
score is reused wherever that pair appears: in every epoch, in a shuffled, filtered or re-ordered dataset, and in
later runs (a sweep over `beta` or the learning rate computes the reference once). Scores are stored as computed
(float32 values in SQLite's float64), so a cached score is the score that would be computed again, up to the
rounding of a different batch composition (the same as between two batch sizes).

`resolve_precompute` decides what ``precompute_ref_log_probs=None`` (DMPO's default) means for a run: precompute
where it is exact and does not cost extra reference passes -- a fixed reference (no `sync_ref_model`), a loss that
reads trajectory scores only, a model that does not compute in float64, map-style datasets, and a run that sees every
training pair at least once.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .rows.columns import TOKENIZED_COLUMNS


__all__ = ["KEY_COLUMNS", "REF_CACHE_ENV", "ReferenceScoreStore", "default_cache_dir", "resolve_precompute", "row_key"]

REF_CACHE_ENV = "DMPO_TRL_REF_CACHE_DIR"
#: The tokenized columns a pair's reference score depends on (with the context).
KEY_COLUMNS = TOKENIZED_COLUMNS[:7]


def default_cache_dir() -> Path:
    """``$DMPO_TRL_REF_CACHE_DIR`` if set, else ``~/.cache/dmpo_trl/reference_scores``."""
    env = os.environ.get(REF_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dmpo_trl" / "reference_scores"


def row_key(example: Mapping[str, Sequence[int] | int]) -> str:
    """Hash of a tokenized pair's `KEY_COLUMNS` (token ids, turn ids and ``T`` of both sides)."""
    h = hashlib.blake2b(digest_size=16)
    for name in KEY_COLUMNS:
        value = example[name]
        values = [int(value)] if isinstance(value, int) else [int(x) for x in value]
        h.update(name.encode())
        h.update(len(values).to_bytes(8, "little"))
        h.update(b"".join(x.to_bytes(8, "little", signed=True) for x in values))
    return h.hexdigest()


class ReferenceScoreStore:
    """``key -> (S_ref_chosen, S_ref_rejected)`` for one context, in ``<directory>/<context>.sqlite``."""

    def __init__(self, directory: str | os.PathLike, context: str):
        self.path = Path(directory).expanduser() / f"{context}.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, chosen REAL, rejected REAL)")
        return con

    def get(self, keys: Iterable[str]) -> dict[str, tuple[float, float]]:
        """The stored scores among ``keys`` (missing keys are absent from the result)."""
        keys = list(dict.fromkeys(keys))
        if not keys or not self.path.is_file():
            return {}
        out: dict[str, tuple[float, float]] = {}
        with self._connect() as con:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for key, chosen, rejected in con.execute(
                    f"SELECT key, chosen, rejected FROM scores WHERE key IN ({marks})", chunk
                ):
                    out[key] = (chosen, rejected)
        return out

    def put(self, items: Iterable[tuple[str, float, float]]) -> None:
        """Store (or replace) scores."""
        with self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", list(items))


def _computes_in_float64(model, args) -> bool:
    """Whether the reference scores would be float64 (a float64 model object, or ``model_init_kwargs`` asking for
    float64): the batch carries precomputed scores as float32, as TRL's collator does, which rounds them."""
    dtype = getattr(model, "dtype", None)
    if dtype is None and callable(getattr(model, "parameters", None)):  # a module without a `dtype` property
        dtype = next((p.dtype for p in model.parameters()), None)
    if dtype is None:
        dtype = (getattr(args, "model_init_kwargs", None) or {}).get("dtype")
    return str(dtype).removeprefix("torch.") in ("float64", "double")


def resolve_precompute(args, train_dataset, eval_dataset, model=None) -> bool:
    """What ``args.precompute_ref_log_probs`` means for this run (``None``: precompute where exact and no dearer).

    ``None`` precomputes in single-process runs when the reference is fixed (`sync_ref_model` off), the loss needs only the reference's
    trajectory scores (not a non-default ``f_divergence_type``, which reads the reference log-prob of every action),
    the model does not compute in float64 (precomputed scores travel as float32), the train dataset and every eval
    dataset are map-style `datasets.Dataset`s, and the run sees every training pair at least once (no ``max_steps``
    that stops within the first epoch): then the reference runs once per pair instead of once per pair and epoch, and
    later runs on the same pairs read it from the store.
    """
    from datasets import Dataset

    if args.precompute_ref_log_probs is not None:
        return bool(args.precompute_ref_log_probs)
    if args.sync_ref_model or getattr(args, "f_divergence_type", "reverse_kl") != "reverse_kl":
        return False
    if args.world_size > 1:  # several processes: TRL's precompute pass caches in per-process temporary files
        return False
    if _computes_in_float64(model, args) or not isinstance(train_dataset, Dataset):
        return False
    evals = eval_dataset.values() if isinstance(eval_dataset, Mapping) else [eval_dataset]
    if any(ds is not None and not isinstance(ds, Dataset) for ds in evals):
        return False
    if args.max_steps > 0:
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
        if args.max_steps < math.ceil(len(train_dataset) / per_step):
            return False
    return True
