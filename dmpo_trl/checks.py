"""The row checks the trainer makes: structure of one preference pair, then tokenization and truncation.

The project format (see `docs/dataset_format.md`) is TRL's conversational preference format::

    {"prompt": [messages], "chosen": [messages], "rejected": [messages], "tools": [...]?, ...metadata}

`check_pair` is the single place that decides whether a row is well formed (no tokenizer); `prepare_pair` adds the
tokenization (`dmpo_trl.tokenization`) and the truncation check, and returns the columns of `TOKENIZED_COLUMNS`.
The converters run `check_pair` on every row they produce, `dmpo_trl.data.validation` and the trainer run
`prepare_pair`. Every failure raises `DMPODataError` with the row index, the side (`prompt`, `chosen`, `rejected`)
and a reason that starts with a fixed phrase (e.g. ``"roles out of order"``), so callers and tests can match it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from dmpo_trl.errors import DMPODataError
from dmpo_trl.plain_text import check_plain_pair, is_plain_text_pair, tokenize_plain_pair
from dmpo_trl.tokenization import NOT_ACTION, split_prompt, tokenize_pair, truncate_trajectory


__all__ = [
    "COLLATOR_COLUMNS",
    "SKIP_REASON_COLUMN",
    "TOKENIZED_COLUMNS",
    "check_pair",
    "keep_streamed_row",
    "prepare_pair",
    "prepare_row",
    "skipped_summary",
    "truncation_stats",
]

#: The tokenized pair, as `prepare_pair` returns it: token ids of the shared prompt and of each side after it, the
#: per-token action index of each side (``-1``: not an action), ``T`` of each side, and the actions each side keeps
#: after truncation at ``max_length``.
TOKENIZED_COLUMNS = (
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "chosen_turn_ids",
    "rejected_turn_ids",
    "chosen_num_turns",
    "rejected_num_turns",
    "chosen_kept_turns",
    "rejected_kept_turns",
)
#: DMPO-weighted reference scores, added by `precompute_ref_log_probs`.
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
#: What `DataCollatorForDMPO` reads (the kept-turn counts it recomputes from the truncation).
COLLATOR_COLUMNS = TOKENIZED_COLUMNS[:7] + REFERENCE_COLUMNS
#: Why `prepare_row` could not use a row, ``"<side>: <reason>"`` (``""`` for a usable row); only with ``skip_invalid``.
SKIP_REASON_COLUMN = "dmpo_skip_reason"

KNOWN_ROLES = ("system", "user", "assistant", "tool")
logger = logging.getLogger(__name__)
SIDES = ("chosen", "rejected")

Message = Mapping[str, Any]


def check_pair(example: Mapping[str, Any], row: int | None = None) -> None:
    """Raise `DMPODataError` naming `row` and the reason if `example` is not a well-formed preference pair.

    Checks, in order: `chosen`/`rejected` present and lists of messages; the prompt (explicit, or for rows
    without a `prompt` the messages before the first assistant message, which must be the same on both sides --
    the trainer's rule, `dmpo_trl.tokenization.split_prompt`); every message has a known role and text content;
    the prompt is non-empty, has a system message only first, and does not end with an assistant message; each
    side is non-empty, holds at least one assistant action, starts with one, and alternates actions with
    observations (no two assistant messages in a row); tool results follow an action or another tool result;
    assistant messages are not empty unless they carry `tool_calls`.
    """
    if not isinstance(example, Mapping):
        raise DMPODataError(f"a row must be a dict with prompt/chosen/rejected, got {type(example).__name__}", row)
    if is_plain_text_pair(example):  # standard (plain-text) row: one action per side (`dmpo_trl.plain_text`)
        return check_plain_pair(example, row)
    chosen = _side(example, "chosen", row)
    rejected = _side(example, "rejected", row)
    prompt = example.get("prompt")
    if prompt is None:
        prompt, chosen, rejected = _split_implicit(chosen, rejected, row)
    elif isinstance(prompt, str):
        raise DMPODataError(
            "mixed formats: the prompt is a plain string but chosen/rejected are lists of messages; give the prompt "
            "as messages too, or the whole row as plain text (the standard format)",
            row,
            "prompt",
        )
    elif not _is_list(prompt):
        raise DMPODataError(f"'prompt' must be a list of messages, got {type(prompt).__name__}", row, "prompt")
    check_prompt(prompt, row)
    for side, messages in (("chosen", chosen), ("rejected", rejected)):
        check_continuation(messages, side, row)


def check_prompt(prompt: Sequence[Message], row: int | None = None) -> None:
    """Check the prompt messages of one pair (see `check_pair`)."""
    if len(prompt) == 0:
        raise DMPODataError("empty prompt: the prompt has no messages", row, "prompt")
    for i, message in enumerate(prompt):
        check_message(message, i, "prompt", row)
    _check_order(prompt, "prompt", row, allow_system_first=True)
    if prompt[-1]["role"] == "assistant":
        raise DMPODataError(
            f"roles out of order: the prompt ends with an assistant message (message {len(prompt) - 1}); "
            "the first action of chosen/rejected must follow a user or tool message",
            row,
            "prompt",
        )


def check_continuation(messages: Sequence[Message], side: str, row: int | None = None) -> None:
    """Check one side (`chosen` or `rejected`): non-empty, action first, actions alternate with observations."""
    if len(messages) == 0:
        raise DMPODataError(f"empty {side}: the {side} continuation has no messages", row, side)
    for i, message in enumerate(messages):
        check_message(message, i, side, row)
    if not any(m["role"] == "assistant" for m in messages):
        roles = ", ".join(repr(m["role"]) for m in messages)
        raise DMPODataError(f"no assistant action in {side} (roles: {roles})", row, side)
    if messages[0]["role"] != "assistant":
        raise DMPODataError(
            f"roles out of order: {side} starts with a {messages[0]['role']!r} message; "
            "a continuation must start with an assistant action",
            row,
            side,
        )
    _check_order(messages, side, row, allow_system_first=False)
    for i in range(1, len(messages)):
        if messages[i]["role"] == "assistant" and messages[i - 1]["role"] == "assistant":
            raise DMPODataError(
                f"roles out of order: messages {i - 1} and {i} are consecutive assistant actions with no "
                "observation between them",
                row,
                side,
            )


def check_message(message: Any, index: int, side: str, row: int | None = None) -> None:
    """Check one message: a dict with a known role, string content, well-formed `tool_calls`."""
    if not isinstance(message, Mapping):
        raise DMPODataError(
            f"message {index} is not a dict with 'role' and 'content' (got {type(message).__name__})", row, side
        )
    role = message.get("role")
    if role not in KNOWN_ROLES:
        raise DMPODataError(
            f"unknown role {role!r} in message {index} (expected one of {', '.join(KNOWN_ROLES)})", row, side
        )
    tool_calls = message.get("tool_calls")
    if tool_calls and role != "assistant":
        raise DMPODataError(
            f"malformed tool_calls in message {index}: only assistant messages may carry tool_calls", row, side
        )
    if role == "assistant" and tool_calls:
        _check_tool_calls(tool_calls, index, side, row)
    content = message.get("content")
    if content is None and role == "assistant" and tool_calls:
        return
    if not isinstance(content, str):
        raise DMPODataError(f"non-text content in message {index}: {_describe_content(content)}", row, side)
    if role == "assistant" and not tool_calls and not content.strip():
        raise DMPODataError(f"empty action: assistant message {index} has no content and no tool_calls", row, side)


def _split_implicit(
    chosen: list[Message], rejected: list[Message], row: int | None
) -> tuple[list[Message], list[Message], list[Message]]:
    """Split a row without `prompt` exactly as the trainer does (before the first assistant message)."""
    for side, messages in (("chosen", chosen), ("rejected", rejected)):
        if len(messages) == 0:
            raise DMPODataError(f"empty {side}: the {side} continuation has no messages", row, side)
        for i, message in enumerate(messages):
            check_message(message, i, side, row)
        if not any(m["role"] == "assistant" for m in messages):
            roles = ", ".join(repr(m["role"]) for m in messages)
            raise DMPODataError(f"no assistant action in {side} (roles: {roles})", row, side)
    prompt, chosen, rejected = split_prompt({"chosen": chosen, "rejected": rejected}, row)
    return prompt, chosen, rejected


def _side(example: Mapping[str, Any], side: str, row: int | None) -> list[Message]:
    if side not in example or example[side] is None:
        raise DMPODataError(f"missing {side!r}: a pair needs 'chosen' and 'rejected'", row, side)
    value = example[side]
    if not _is_list(value):
        raise DMPODataError(f"{side!r} must be a list of messages, got {type(value).__name__}", row, side)
    return list(value)


def _check_order(messages: Sequence[Message], side: str, row: int | None, *, allow_system_first: bool) -> None:
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system" and not (allow_system_first and i == 0):
            where = "the start of the prompt"
            raise DMPODataError(
                f"roles out of order: system message at position {i}; system messages are only allowed at {where}",
                row,
                side,
            )
        if role == "tool" and (i == 0 or messages[i - 1]["role"] not in ("assistant", "tool")):
            previous = "nothing" if i == 0 else f"a {messages[i - 1]['role']!r} message"
            raise DMPODataError(
                f"roles out of order: tool message {i} follows {previous}; tool results must follow an "
                "assistant action or another tool result",
                row,
                side,
            )


def _check_tool_calls(tool_calls: Any, index: int, side: str, row: int | None) -> None:
    def bad(why: str) -> DMPODataError:
        return DMPODataError(f"malformed tool_calls in message {index}: {why}", row, side)

    if not _is_list(tool_calls):
        raise bad(f"expected a list, got {type(tool_calls).__name__}")
    for j, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise bad(f"call {j} has no 'function' dict")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise bad(f"call {j} has no function name")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, (Mapping, str)):
            raise bad(f"call {j} arguments must be a dict or a JSON string, got {type(arguments).__name__}")


def _describe_content(content: Any) -> str:
    if content is None:
        return "content is missing or None (expected a string)"
    if _is_list(content):
        kinds = [part.get("type") if isinstance(part, Mapping) else type(part).__name__ for part in content]
        non_text = [kind for kind in kinds if kind != "text"]
        if non_text:
            return f"a content part of type {non_text[0]!r} where text is needed"
        return "content is a list of text parts (expected a string; join them, or convert with --from openai)"
    return f"content is {type(content).__name__} (expected a string)"


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, Mapping))


def prepare_pair(
    tokenizer, example: Mapping[str, Any], row: int | None = None, max_length: int | None = None
) -> dict[str, Any]:
    """A row as `DMPOTrainer` trains on it: structural checks (`check_pair`), `tokenize_pair`, and the truncation
    check. Returns the `TOKENIZED_COLUMNS`; raises `DMPODataError` naming the row and the reason."""
    check_pair(example, row)
    if is_plain_text_pair(example):
        out = tokenize_plain_pair(tokenizer, example, row=row)
    else:
        out = tokenize_pair(tokenizer, dict(example), row=row)
    prompt = out["prompt_ids"]
    for side in SIDES:
        turn_ids = [NOT_ACTION] * len(prompt) + out[f"{side}_turn_ids"]
        if not any(t >= 0 for t in turn_ids):  # the core guarantees this; never let an empty mask through
            raise DMPODataError("the action mask is empty after tokenization", row, side)
        _, _, kept_turns = truncate_trajectory(len(prompt), prompt + out[f"{side}_ids"], turn_ids, max_length)
        if kept_turns == 0:
            first_end = turn_ids.index(0) + turn_ids.count(0)
            raise DMPODataError(
                f"{NO_ACTION_FITS}={max_length}: the first action ends at token {first_end} "
                f"(prompt: {len(prompt)} tokens); raise max_length or shorten the prompt",
                row,
                side,
            )
        out[f"{side}_kept_turns"] = kept_turns
    return out


#: The start of the reason of a row whose prompt leaves no room for an action (`prepare_pair`).
NO_ACTION_FITS = "no action fits within max_length"
#: What a refused row's error adds, so the user knows the switch.
SKIP_HINT = " (set skip_invalid_pairs=True to drop the rows DMPO cannot train on, with a warning)"
STRICT_HINT = (
    " (skip_invalid_pairs=False is the strict mode; by default such rows are dropped with a warning, as DPOTrainer "
    "drops rows whose prompt fills max_length)"
)


def prepare_row(
    example: Mapping[str, Any], idx: int, *, tokenizer, max_length: int | None, skip_invalid: bool | None
) -> dict[str, Any]:
    """`datasets.map` function: `prepare_pair`, plus `SKIP_REASON_COLUMN`.

    A row DMPO cannot use gets empty columns and its reason (`DMPODataError.reason`, the side prefixed), so the
    caller can count, report and drop it, when ``skip_invalid`` says so: ``True`` for every such row, ``None`` (the
    default, DPOTrainer's behaviour) only for rows whose prompt leaves no room for an action within `max_length`.
    Otherwise it raises, the message naming ``skip_invalid_pairs``; ``False`` is the strict mode (over-long rows raise
    too)."""
    try:
        out = prepare_pair(tokenizer, example, row=idx, max_length=max_length)
        out[SKIP_REASON_COLUMN] = ""
    except DMPODataError as err:
        overlong = err.reason.startswith(NO_ACTION_FITS)
        if not (skip_invalid or (skip_invalid is None and overlong)):
            hint = STRICT_HINT if overlong else SKIP_HINT
            raise DMPODataError(err.reason + hint, err.row, err.side) from err
        out = {key: [] for key in TOKENIZED_COLUMNS[:5]}
        out.update(dict.fromkeys(TOKENIZED_COLUMNS[5:], 0))
        out[SKIP_REASON_COLUMN] = f"{err.side}: {err.reason}" if err.side else err.reason
    return out


def keep_streamed_row(example: Mapping[str, Any], idx: int, name: str) -> bool:
    """`IterableDataset.filter` function for a streamed, prepared dataset: drops skipped rows, logging each one."""
    if example[SKIP_REASON_COLUMN]:
        logger.warning(f"Skipped row {idx} of the streamed {name} dataset: {example[SKIP_REASON_COLUMN]}")
    return not example[SKIP_REASON_COLUMN]


def skipped_summary(reasons: Sequence[str], most: int = 5, rows_shown: int = 5) -> str:
    """``"2x <reason> (rows 1, 3); 1x <reason> (rows 4)"``: the non-empty `SKIP_REASON_COLUMN` values, grouped by
    their whole text (most frequent first), with the first row indices of each."""
    rows: dict[str, list[int]] = {}
    for row, reason in enumerate(reasons):
        if reason:
            rows.setdefault(reason, []).append(row)
    groups = sorted(rows.items(), key=lambda item: -len(item[1]))
    parts = []
    for reason, where in groups[:most]:
        shown = ", ".join(map(str, where[:rows_shown])) + (", ..." if len(where) > rows_shown else "")
        parts.append(f"{len(where)}x {reason} (rows {shown})")
    if len(groups) > most:
        parts.append(f"and {len(groups) - most} other reasons")
    return "; ".join(parts)


def truncation_stats(dataset, max_length: int | None, skipped: int) -> dict[str, Any]:
    """Pairs, skipped pairs, and what truncation at `max_length` drops, over a prepared `datasets.Dataset`."""
    total = kept = truncated = 0
    for tw, tl, kw, kl in zip(*(dataset[c] for c in TOKENIZED_COLUMNS[5:]), strict=True):
        total += tw + tl
        kept += kw + kl
        truncated += (kw < tw) or (kl < tl)
    return {
        "pairs": len(dataset),
        "pairs_skipped": skipped,
        "pairs_truncated": truncated,
        "actions": total,
        "actions_dropped": total - kept,
        "max_length": max_length,
    }
