"""Reference scores computed once: a keyed store reused across epochs and runs, and when precomputing is exact.

The reference score ``S_ref`` of a trajectory depends on nothing but its tokens (prompt, trajectory, action index of
every token, ``T``), the truncation (``max_length``), ``gamma``, the masking rules and the reference model (its
weights, dtype and mixed precision). `ReferenceScoreStore` keeps ``(S_ref_chosen, S_ref_rejected)`` per pair in one
SQLite file per *context* (a hash of everything but the pair), keyed by a hash of the pair's tokenized columns. So a
score is reused wherever that pair appears: in every epoch, in a shuffled, filtered or re-ordered dataset, and in
later runs (a sweep over `beta` or the learning rate computes the reference once). Scores are stored as computed
(float32 values in SQLite's float64), so a cached score is the score that would be computed again, up to the
rounding of a different batch composition (the same as between two batch sizes).

The context (`reference_context`) covers everything that changes a reference log-prob besides the tokens: the
reference weights (TRL's hash), the model config (every field, e.g. ``rms_norm_eps``), the attention implementation,
the parameter dtype and the mixed precision, the tokenizer and its chat template, the transformers and torch versions,
and the DMPO settings above. Each store file has a ``<context>.json`` next to it (written atomically) that says what
it was computed with.

`resolve_precompute` decides what ``precompute_ref_log_probs=None`` (DMPO's default) means for a run: precompute
where it is exact and does not cost extra reference passes -- a fixed reference (no `sync_ref_model`), a loss that
reads trajectory scores only, a model that does not compute in float64, map-style datasets, and a run that sees every
training pair at least once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .files import atomic_write_json
from .rows.columns import TOKENIZED_COLUMNS


__all__ = [
    "KEY_COLUMNS",
    "REF_CACHE_ENV",
    "ReferenceScoreStore",
    "context_name",
    "default_cache_dir",
    "reference_context",
    "resolve_precompute",
    "row_key",
]

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


#: Config fields that name where a model came from, not how it computes.
_CONFIG_PROVENANCE = ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash")


def _model_description(model) -> dict:
    config = getattr(model, "config", None)
    values = config.to_dict() if hasattr(config, "to_dict") else {}
    values = {k: v for k, v in values.items() if k not in _CONFIG_PROVENANCE}
    params = getattr(model, "parameters", None)
    dtypes = sorted({str(p.dtype) for p in params()}) if callable(params) else []
    return {
        "class": type(model).__qualname__,
        "config": values,
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "parameter_dtypes": dtypes,
    }


def _tokenizer_description(tokenizer) -> dict:
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = hashlib.sha256(backend.to_str().encode()).hexdigest() if hasattr(backend, "to_str") else None
    return {
        "class": type(tokenizer).__qualname__,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "size": len(tokenizer) if hasattr(tokenizer, "__len__") else None,
        "special_tokens": sorted(map(str, getattr(tokenizer, "all_special_tokens", []) or [])),
        "vocabulary": vocab,
    }


def reference_context(model, tokenizer, args, mixed_precision: str, weights_hash: str | None, version: int) -> dict:
    """Everything a pair's reference score depends on besides the pair, as plain data (hash it for the store name).

    Args:
        model: the reference model (unwrapped: a transformers model), for its config, attention and dtypes.
        tokenizer: the processing class, for its vocabulary, special tokens and chat template.
        args: the `DMPOConfig` (``gamma``, ``turn_weighting``, ``max_length``, ``ld_alpha``, ``bf16``, ``fp16``).
        mixed_precision: accelerate's mixed precision (autocast) of the run.
        weights_hash: the hash of the reference weights (TRL's `hash_module`).
        version: the masking rules' version (`dmpo_trl.core.trainer.MASKING_VERSION`).
    """
    import torch
    import transformers

    return {
        "weights": weights_hash,
        "model": _model_description(model),
        "tokenizer": _tokenizer_description(tokenizer),
        "precision": [str(mixed_precision), bool(args.bf16), bool(args.fp16)],
        "dmpo": {
            "masking_version": version,
            "gamma": args.gamma,
            "max_length": args.max_length,
            "ld_alpha": args.ld_alpha,
            "turn_weighting": args.turn_weighting,
        },
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
    }


def context_name(context: Mapping) -> str:
    """The store file name of a `reference_context`: a hash of its JSON."""
    text = json.dumps(context, sort_keys=True, default=str)
    return hashlib.sha256(f"dmpo:{text}".encode()).hexdigest()[:32]


class ReferenceScoreStore:
    """``key -> (S_ref_chosen, S_ref_rejected)`` for one context, in ``<directory>/<context>.sqlite``."""

    def __init__(self, directory: str | os.PathLike, context: str):
        self.path = Path(directory).expanduser() / f"{context}.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=60)
            con.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, chosen REAL, rejected REAL)")
        except sqlite3.DatabaseError as err:
            raise self._unreadable(err) from None
        return con

    def _unreadable(self, err: Exception) -> OSError:
        return OSError(
            f"{self.path}: the reference-score store cannot be read ({err}); delete that file (its scores are "
            'computed again), or set ref_cache_dir="" to run without a store'
        )

    def describe(self, context: Mapping) -> None:
        """Write ``<context>.json`` (what the scores were computed with) next to the store, once, atomically."""
        meta = self.path.with_suffix(".json")
        if not meta.is_file():
            atomic_write_json(meta, context)

    def get(self, keys: Iterable[str]) -> dict[str, tuple[float, float]]:
        """The stored scores among ``keys`` (missing keys are absent from the result)."""
        keys = list(dict.fromkeys(keys))
        if not keys or not self.path.is_file():
            return {}
        out: dict[str, tuple[float, float]] = {}
        try:
            with self._connect() as con:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    for key, chosen, rejected in con.execute(
                        f"SELECT key, chosen, rejected FROM scores WHERE key IN ({marks})", chunk
                    ):
                        out[key] = (chosen, rejected)
        except sqlite3.DatabaseError as err:
            raise self._unreadable(err) from None
        return out

    def put(self, items: Iterable[tuple[str, float, float]]) -> None:
        """Store (or replace) scores."""
        try:
            with self._connect() as con:
                con.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", list(items))
        except sqlite3.DatabaseError as err:
            raise self._unreadable(err) from None


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
