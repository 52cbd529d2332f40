"""Where `DMPOTrainer` depends on TRL / transformers internals: the tested TRL range, and each private access, here.

`DMPOTrainer` overrides `DPOTrainer` hooks (`_prepare_dataset`, `_precompute_ref_logps`, `compute_ref_log_probs`,
`_compute_loss`) and reads the outputs of TRL's fused LM head protocol (`dmpo_trl.core.lm_head`); these changed three
times between TRL 1.13 and 1.16, so any other TRL release is refused when this module is first imported instead of
silently computing something else. `dmpo_trl.core.config` and `dmpo_trl.core.trainer` import it before TRL.

Where no public hook exists, the access to private state sits in one function below, each pinned by
`tests/core/test_compat.py`, which fails loudly when a TRL or transformers release changes what it relies on:

- `dpo_init_args`: DPOTrainer 1.16 warns that ``padding_free`` is "temporarily unavailable" and turns it off, and
  decides in ``__init__`` whether to load a reference from ``precompute_ref_log_probs``;
- `precompute_cache_key`: DPOTrainer 1.16 keys its precompute cache file on ``_precompute_model_hash``;
- `add_train_tokens`: the ``num_tokens`` metric is DPOTrainer's ``_total_train_tokens`` over ``_tp_size``;
- `logs_this_step`: transformers' `DefaultFlowCallback` logging schedule, to compute the LM head's metrics only on
  the steps that log them;
- `step_metrics`: DPOTrainer's ``_metrics[mode]`` lists, which its ``log`` averages and clears;
- `is_vision_dataset`: DPOTrainer's ``_is_vision_dataset`` (DMPO trains on text conversations only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from packaging.version import Version


__all__ = [
    "add_train_tokens",
    "check_trl_version",
    "dpo_init_args",
    "is_vision_dataset",
    "logs_this_step",
    "precompute_cache_key",
    "precompute_model_hash",
    "step_metrics",
    "supported_trl_range",
    "train_tokens",
]

TRL_MIN = Version("1.16.0")
TRL_MAX_EXCLUSIVE = Version("1.17.0")


def supported_trl_range() -> str:
    return f">={TRL_MIN},<{TRL_MAX_EXCLUSIVE}"


def check_trl_version(installed: str | None = None) -> None:
    """Raise `ImportError` unless the installed TRL is in the tested range."""
    if installed is None:
        try:
            installed = version("trl")
        except PackageNotFoundError as err:
            raise ImportError(f"dmpo_trl needs trl{supported_trl_range()}, which is not installed.") from err
    base = Version(Version(installed).base_version)  # 1.17.0rc1 counts as 1.17.0
    if not TRL_MIN <= base < TRL_MAX_EXCLUSIVE:
        raise ImportError(
            f"dmpo_trl is tested with trl{supported_trl_range()} and relies on DPOTrainer internals that change "
            f"between releases; found trl {installed}. Install a supported version: pip install 'trl{supported_trl_range()}'."
        )


check_trl_version()


@contextlib.contextmanager
def dpo_init_args(args: Any, precompute_ref_log_probs: bool) -> Iterator[None]:
    """Run `DPOTrainer.__init__` with ``args.padding_free=False`` and the resolved ``precompute_ref_log_probs``; the
    user's values are restored afterwards.

    DPOTrainer 1.16 warns that ``padding_free`` is disabled and falls back to padding; DMPO implements it, so the flag
    is hidden from ``__init__`` (no misleading warning) and the trainer sets its own ``padding_free`` after. The
    precompute decision (`dmpo_trl.core.ref_cache.resolve_precompute`) must be what ``__init__`` sees, since it
    decides there whether a reference model is loaded and hashed.
    """
    padding_free, requested = args.padding_free, args.precompute_ref_log_probs
    args.padding_free, args.precompute_ref_log_probs = False, precompute_ref_log_probs
    try:
        yield
    finally:
        args.padding_free, args.precompute_ref_log_probs = padding_free, requested


def precompute_model_hash(trainer: Any) -> str | None:
    """TRL's hash of the reference weights (``None`` unless reference log-probs are precomputed)."""
    return trainer._precompute_model_hash


@contextlib.contextmanager
def precompute_cache_key(trainer: Any, key: str) -> Iterator[None]:
    """Make DPOTrainer 1.16's `_precompute_ref_logps` key its cache file on `key` instead of the model hash alone
    (its file name is the dataset fingerprint plus ``_precompute_model_hash``)."""
    base, trainer._precompute_model_hash = trainer._precompute_model_hash, key
    try:
        yield
    finally:
        trainer._precompute_model_hash = base


def add_train_tokens(trainer: Any, tokens: int) -> int:
    """Add the tokens of a training batch, gathered over processes, to DPOTrainer's running count and return the
    total (tensor-parallel ranks see the same batch: each counts ``1 / tp_size``, as DPOTrainer 1.16 does)."""
    trainer._total_train_tokens += tokens // trainer._tp_size
    return trainer._total_train_tokens


def train_tokens(trainer: Any) -> int:
    """DPOTrainer's running count of training tokens (what the ``num_tokens`` metric shows)."""
    return trainer._total_train_tokens


def logs_this_step(args: Any, state: Any) -> bool:
    """Whether the training step about to run (``state.global_step + 1``) logs its metrics: the steps transformers'
    `DefaultFlowCallback` logs for ``logging_strategy`` / ``logging_steps`` / ``logging_first_step``, every step under
    ``"epoch"`` (its step is not known in advance) and the last step (the final log)."""
    strategy = str(getattr(args.logging_strategy, "value", args.logging_strategy))
    step = state.global_step + 1
    last = state.max_steps > 0 and step >= state.max_steps
    if strategy == "epoch":
        return True
    first = bool(args.logging_first_step) and step == 1  # DefaultFlowCallback logs it under every strategy
    if strategy != "steps":
        return last or first
    return last or first or step % max(int(state.logging_steps), 1) == 0


def step_metrics(trainer: Any, mode: str) -> dict[str, list]:
    """DPOTrainer's metric lists of ``mode`` (``"train"`` / ``"eval"``): values appended here are averaged and logged by
    `DPOTrainer.log`, which then clears them."""
    return trainer._metrics[mode]


def is_vision_dataset(trainer: Any) -> bool:
    """Whether DPOTrainer found image columns in the training data."""
    return trainer._is_vision_dataset
