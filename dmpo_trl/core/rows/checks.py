"""The row checks the trainer makes: structure of one preference pair, then tokenization and truncation.

The project format (see `docs/dataset_format.md`) is TRL's conversational preference format::

    {"prompt": [messages], "chosen": [messages], "rejected": [messages], "tools": [...]?, ...metadata}

`check_pair` is the single place that decides whether a row is well formed (no tokenizer); `prepare_pair` adds the
tokenization (`dmpo_trl.core.rows.tokenization`) and the truncation checks, and returns the columns of `TOKENIZED_COLUMNS`. Both
first undo what Arrow storage does to a row (`dmpo_trl.core.rows.normalize.normalize_pair`: None fill-ins removed, JSON-string
tool arguments parsed), so a row reads the same from JSONL, Parquet or a `datasets.Dataset`.
Standard (plain-text) rows are checked and tokenized by `dmpo_trl.core.rows.plain_text` instead (one action per side).
The converters run `check_pair` on every row they produce, `dmpo_trl.data.validation` and the trainer
(`dmpo_trl.core.rows.preparation`) run `prepare_pair`. Every failure raises `DMPODataError` with the row index, the side
(`prompt`, `chosen`, `rejected`) and a reason that starts with a fixed phrase (e.g. ``"roles out of order"``), so
callers and tests can match it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.normalize import normalize_pair
from dmpo_trl.core.rows.plain_text import check_plain_pair, is_plain_text_pair, tokenize_plain_pair
from dmpo_trl.core.rows.tokenization import NOT_ACTION, split_prompt, tokenize_pair, truncate_trajectory
from dmpo_trl.core.rows.tool_call_ids import check_tool_call_ids


__all__ = ["NO_ACTION_FITS", "check_pair", "prepare_pair"]

KNOWN_ROLES = ("system", "user", "assistant", "tool")
#: The start of the reason of a row whose prompt leaves no room for an action (`prepare_pair`).
NO_ACTION_FITS = "no action fits within max_length"
#: Columns of formats that need `dmpo-trl convert` first, and what to say about them.
_OTHER_LAYOUTS = (
    (("conversations",), " (this looks like ShareGPT data: convert it first with `dmpo-trl convert --from sharegpt`)"),
    (
        ("preferred_output", "messages", "input"),
        " (this looks like OpenAI chat data: convert it first with `dmpo-trl convert --from openai`)",
    ),
)
SIDES = ("chosen", "rejected")

Message = Mapping[str, Any]


def check_pair(example: Mapping[str, Any], row: int | None = None) -> None:
    """Raise `DMPODataError` naming `row` and the reason if `example` is not a well-formed preference pair.

    Checks, in order: `chosen`/`rejected` present and lists of messages; the prompt (explicit, or for rows
    without a `prompt` the messages before the first assistant message, which must be the same on both sides --
    the trainer's rule, `dmpo_trl.core.rows.tokenization.split_prompt`); every message has a known role and text content;
    the prompt is non-empty, has a system message only first, and does not end with an assistant message; each
    side is non-empty, holds at least one assistant action, starts with one, and alternates actions with
    observations (no two assistant messages in a row); tool results follow an action or another tool result;
    assistant messages are not empty unless they carry `tool_calls`; tool results answer the calls they name
    (`dmpo_trl.core.rows.tool_call_ids`); tool-call arguments and `tools` are objects (or their JSON strings). The row
    is read as `dmpo_trl.core.rows.normalize.normalize_pair` makes it.
    """
    if not isinstance(example, Mapping):
        raise DMPODataError(f"a row must be a dict with prompt/chosen/rejected, got {type(example).__name__}", row)
    if is_plain_text_pair(example):  # standard (plain-text) row: one action per side (`dmpo_trl.core.rows.plain_text`)
        return check_plain_pair(example, row)
    _check_normalized(normalize_pair(example), row)


def _check_normalized(example: Mapping[str, Any], row: int | None) -> None:
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
    _check_tools(example.get("tools"), row)


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
    check_tool_call_ids(messages, side, row)
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
    if role is None and "from" in message:
        raise DMPODataError(
            f"message {index} has 'from'/'value' keys (FastChat / ShareGPT, as in ETO's files) instead of "
            "'role'/'content': convert the file first, `dmpo-trl convert --from eto IN OUT` (or --from sharegpt)",
            row,
            side,
        )
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
        hint = next((h for keys, h in _OTHER_LAYOUTS if any(k in example for k in keys)), "")
        raise DMPODataError(f"missing {side!r}: a pair needs 'chosen' and 'rejected'{hint}", row, side)
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
        if isinstance(arguments, str):  # normalize_pair parsed the JSON objects: what is left is not one
            raise bad(f"call {j} arguments are not a JSON object: {_json_problem(arguments, dict)}")
        if arguments is not None and not isinstance(arguments, Mapping):
            raise bad(f"call {j} arguments must be a dict or a JSON string, got {type(arguments).__name__}")


def _check_tools(tools: Any, row: int | None) -> None:
    if tools is None or (_is_list(tools) and all(isinstance(t, Mapping) for t in tools)):
        return
    if isinstance(tools, str):
        raise DMPODataError(f"malformed tools: not a JSON list of tool schemas: {_json_problem(tools, list)}", row)
    raise DMPODataError(f"malformed tools: expected a list of tool schemas, got {type(tools).__name__}", row)


def _json_problem(text: str, expected: type) -> str:
    try:
        value = json.loads(text)
    except ValueError as err:
        return f"{err} in {text[:40]!r}"
    return f"it holds a JSON {type(value).__name__}, not a {'object' if expected is dict else 'list'}"


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
    """A row as `DMPOTrainer` trains on it: `normalize_pair`, the structural checks (`check_pair`), the chat template's
    support for the row's tool calls, `tokenize_pair`, and the truncation checks (each side keeps an action; the kept
    trajectories still differ). Returns the `TOKENIZED_COLUMNS`; raises `DMPODataError` naming the row and the reason.
    """
    if not isinstance(example, Mapping):
        raise DMPODataError(f"a row must be a dict with prompt/chosen/rejected, got {type(example).__name__}", row)
    if is_plain_text_pair(example):  # standard rows: DPOTrainer's tokens, one action per side
        check_plain_pair(example, row)
        out = tokenize_plain_pair(tokenizer, example, row=row)
    else:
        pair = normalize_pair(example)
        _check_normalized(pair, row)
        _check_template_renders_tools(tokenizer, pair, row)
        out = tokenize_pair(tokenizer, pair, row=row)
    prompt = out["prompt_ids"]
    kept = {}
    for side in SIDES:
        turn_ids = [NOT_ACTION] * len(prompt) + out[f"{side}_turn_ids"]
        if not any(t >= 0 for t in turn_ids):  # the core guarantees this; never let an empty mask through
            raise DMPODataError("the action mask is empty after tokenization", row, side)
        *cut, kept_turns = truncate_trajectory(len(prompt), prompt + out[f"{side}_ids"], turn_ids, max_length)
        if kept_turns == 0:
            first_end = turn_ids.index(0) + turn_ids.count(0)
            raise DMPODataError(
                f"{NO_ACTION_FITS}={max_length}: the first action ends at token {first_end} "
                f"(prompt: {len(prompt)} tokens); raise max_length or shorten the prompt",
                row,
                side,
            )
        out[f"{side}_kept_turns"] = kept_turns
        kept[side] = cut
    if kept["chosen"] == kept["rejected"]:
        truncated = (out["chosen_kept_turns"], out["rejected_kept_turns"]) != (
            out["chosen_num_turns"],
            out["rejected_num_turns"],
        )
        if truncated:
            raise DMPODataError(
                f"no preference left after truncation at max_length={max_length}: chosen and rejected keep the same "
                f"{out['chosen_kept_turns']} action(s), token for token (of {out['chosen_num_turns']} and "
                f"{out['rejected_num_turns']}), so the pair carries no signal; raise max_length or drop the pair",
                row,
            )
        raise DMPODataError("chosen and rejected are identical, token for token: the pair carries no preference", row)
    return out


#: (chat template, probe) -> whether the template drops what the probe renders, checked once per template.
_DROPS_TOOLS: dict[tuple[str, str], bool] = {}
_SENTINELS = ("dmpo_tool_name_7f3a", "dmpo_arg_key_1c9e", "dmpo_arg_value_5b2d", "dmpo_tool_output_8e4f")


def template_drops_tools(tokenizer, calls: bool = True) -> bool:
    """Whether the chat template drops what a row's tools need rendered.

    ``calls=True`` (rows with tool calls): a tool-calling exchange (user, assistant tool call, tool result) rendered
    without the call's name, its arguments or the tool's output (e.g. SmolLM2's template, which renders only
    `content`): TRL's `supports_tool_calling` test. ``calls=False`` (rows whose observations are `tool` messages, with
    no tool call): a tool message after a plain assistant message rendered without its content (a plain ChatML
    template renders it; it has no syntax for tool calls, which such rows do not need). A template that raises on the
    probe is not counted: the rows then report its error."""
    template = tokenizer.chat_template
    probe = "calls" if calls else "results"
    if (template, probe) not in _DROPS_TOOLS:
        name, key, value, output = _SENTINELS
        call = {"type": "function", "function": {"name": name, "arguments": {key: value}}}
        action = (
            {"role": "assistant", "content": "", "tool_calls": [call]}
            if calls
            else {"role": "assistant", "content": "ok"}
        )
        messages = [{"role": "user", "content": "hi"}, action, {"role": "tool", "name": name, "content": output}]
        expected = _SENTINELS if calls else (output,)
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception:  # a template that rejects the exchange: the row's own rendering says how
            text = "".join(expected)
        _DROPS_TOOLS[(template, probe)] = not all(s in text for s in expected)
    return _DROPS_TOOLS[(template, probe)]


def _check_template_renders_tools(tokenizer, pair: Mapping[str, Any], row: int | None) -> None:
    """Refuse a row when the chat template drops what it holds: its tool calls (name, arguments, and the tool results
    after them) for a row with tool calls, the content of its `tool` messages for a row with tool results only. The
    model would learn actions without the calls or observations the row holds."""
    messages = [(side, m) for side in ("prompt", *SIDES) for m in pair.get(side) or ()]
    where = next((side for side, m in messages if m.get("tool_calls")), None)
    calls = where is not None
    where = where or next((side for side, m in messages if m.get("role") == "tool"), None)
    if where is None or not isinstance(getattr(tokenizer, "chat_template", None), str):
        return
    if template_drops_tools(tokenizer, calls=calls):
        what = (
            "tool calls or tool results (rendered, a tool call loses its name or arguments, or a tool message its "
            "content)"
            if calls
            else "tool results (rendered, a tool message loses its content)"
        )
        raise DMPODataError(
            f"the chat template drops {what}, so the model would not train on what the row holds; give a template "
            "that renders them with --chat_template_path FILE (e.g. TRL's trl/chat_templates/qwen2_5.jinja for a "
            "ChatML model)",
            row,
            where,
        )
