"""Standard (plain-text) preference rows: one action per side, tokenized exactly as `DPOTrainer` 1.16 does.

A standard row is ``{"prompt": str, "chosen": str, "rejected": str}`` (explicit prompt) or
``{"chosen": str, "rejected": str}`` (implicit prompt). It has no turns: each completion is one action (``T = 1``,
``phi(0, 1) = 1``), so DMPO's loss on it is DPO's on the same tokens. The tokens are DPOTrainer's, step by step:

1. implicit prompt: the longest common character prefix of ``chosen`` and ``rejected`` (`extract_prompt`'s rule, a
   space before the divergence point going to the completions);
2. the EOS token is appended to each completion that does not already end with it (the model learns to stop);
3. ``tokenizer(prompt)``, ``tokenizer(prompt + chosen)``, ``tokenizer(prompt + rejected)`` (special tokens as the
   tokenizer adds them, e.g. a BOS);
4. the completion starts where the tokenized prompt and the tokenized prompt + completion first differ (a token
   merging across the boundary moves it left; the prompt tokens after that point are dropped, as in DPOTrainer,
   which warns about it once).

Every completion token is an action token of action 0 (the EOS included; nothing follows it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import DMPODataError


__all__ = ["check_plain_pair", "is_plain_text_pair", "split_plain_prompt", "tokenize_plain_pair"]

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def is_plain_text_pair(example: Mapping[str, Any]) -> bool:
    """Whether a row is in the standard (plain-text) format: ``chosen`` or ``rejected`` is a string."""
    return isinstance(example, Mapping) and any(isinstance(example.get(k), str) for k in ("chosen", "rejected"))


def check_plain_pair(example: Mapping[str, Any], row: int | None = None) -> None:
    """Raise `DMPODataError` unless ``chosen``, ``rejected`` (and ``prompt`` when present) are all strings."""
    for key in ("chosen", "rejected"):
        value = example.get(key)
        if not isinstance(value, str):
            got = "missing" if value is None else f"of type {type(value).__name__}"
            raise DMPODataError(
                f"mixed formats: the row is standard (plain text) but {key!r} is {got}; standard rows need "
                "'chosen' and 'rejected' strings (and a 'prompt' string or none), conversational rows lists of messages",
                row,
                key,
            )
    prompt = example.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise DMPODataError(
            f"mixed formats: the completions are plain strings but 'prompt' is of type {type(prompt).__name__}; give the "
            "prompt as a string too, or the whole row as messages",
            row,
            "prompt",
        )


def split_plain_prompt(example: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)``; an implicit prompt is split off as TRL's `extract_prompt` does."""
    chosen, rejected = example["chosen"], example["rejected"]
    if example.get("prompt") is not None:
        return example["prompt"], chosen, rejected
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):  # noqa: B007  (extract_prompt's loop, kept as it is)
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":  # remove space before the prompt
                idx -= 1
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_plain_pair(tokenizer, example: Mapping[str, Any], row: int | None = None) -> dict[str, Any]:
    """Tokenize a standard row into the columns of `dmpo_trl.core.rows.tokenization.tokenize_pair` (``T = 1`` per side)."""
    check_plain_pair(example, row)
    prompt, chosen, rejected = split_plain_prompt(example)
    eos = tokenizer.eos_token
    if eos is None:
        raise DMPODataError(
            "the tokenizer has no EOS token, so a plain-text completion has no end (DPOTrainer appends EOS)", row
        )
    chosen = chosen if chosen.endswith(eos) else chosen + eos
    rejected = rejected if rejected.endswith(eos) else rejected + eos
    prompt_ids = list(tokenizer(text=prompt)["input_ids"])
    chosen_full = list(tokenizer(text=prompt + chosen)["input_ids"])
    rejected_full = list(tokenizer(text=prompt + rejected)["input_ids"])
    prompt_len = min(common_prefix_length(prompt_ids, chosen_full), common_prefix_length(prompt_ids, rejected_full))
    if prompt_len < len(prompt_ids) and "boundary" not in _warned:
        _warned.add("boundary")
        logger.warning(
            "The tokenized prompt is not a prefix of the tokenized prompt + completion (tokens merge across the "
            "boundary); as in DPOTrainer the completion starts where they diverge and the end of the prompt, "
            f"{tokenizer.decode(prompt_ids[prompt_len:])!r}, is left out. Shown once (row {row})."
        )
    chosen_ids, rejected_ids = chosen_full[prompt_len:], rejected_full[prompt_len:]
    for side, ids in (("chosen", chosen_ids), ("rejected", rejected_ids)):
        if not ids:
            raise DMPODataError("the completion tokenizes to nothing after the prompt", row, side)
    return {
        "prompt_ids": prompt_ids[:prompt_len],
        "chosen_ids": chosen_ids,
        "rejected_ids": rejected_ids,
        "chosen_turn_ids": [0] * len(chosen_ids),
        "rejected_turn_ids": [0] * len(rejected_ids),
        "chosen_num_turns": 1,
        "rejected_num_turns": 1,
    }
