"""OpenAI chat messages (with `tool_calls` and `tool` results) to the project format.

Messages: `developer` becomes `system`; legacy `function` results become `tool`; assistant `tool_calls`
(`{"id", "type": "function", "function": {"name", "arguments": "<JSON string>"}}`) become HF-format calls with
`arguments` parsed into a dict (legacy `function_call` too); `content` that is a list of text parts is joined
with newlines (non-text parts such as `image_url` are an error); `content: null` on an assistant message that
calls tools becomes `""`; a tool message without `name` takes the name of the call its `tool_call_id` answers.
Other message keys (`refusal`, `annotations`, `audio`, ...) are dropped.

Pair layouts accepted (other keys are kept as metadata; `tools` is kept, legacy `functions` are wrapped):

1. `prompt` (or `messages`) + `chosen` + `rejected` message lists;
2. OpenAI's preference fine-tuning format: `{"input": {"messages", "tools"?}, "preferred_output": [...],
   "non_preferred_output": [...]}`;
3. `chosen` + `rejected` only, each a full conversation: the prompt is their shared prefix
   (`dmpo_trl.data.common.split_shared_prefix`; an error if they share none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.data.common import (
    ConvertedRows,
    Row,
    convert_rows,
    metadata,
    normalize_tools,
    split_implicit,
    tool_call,
)


OPENAI_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
TEXT_PART_KEYS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}


def openai_messages(messages: Any, side: str, row: int | None) -> list[Row]:
    """OpenAI chat messages as project messages (see the module docstring)."""
    if not isinstance(messages, list):
        raise DMPODataError(f"{side!r} must be a list of messages, got {type(messages).__name__}", row, side)
    result: list[Row] = []
    names_by_id: dict[Any, str] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise DMPODataError(f"message {i} is not a dict with 'role' and 'content'", row, side)
        role = OPENAI_ROLES.get(message["role"]) if isinstance(message["role"], str) else None
        if role is None:
            raise DMPODataError(
                f"unknown role {message['role']!r} in message {i} (expected one of {', '.join(OPENAI_ROLES)})",
                row,
                side,
            )
        content = _text(message.get("content"), i, side, row)
        out: Row = {"role": role, "content": content}
        if role == "assistant":
            calls = _tool_calls(message, i, side, row)
            for call in calls:
                if "id" in call:
                    names_by_id[call["id"]] = call["function"]["name"]
            if calls:
                out["tool_calls"] = calls
                out["content"] = content or ""
            elif content is None:
                out["content"] = ""  # an empty action: check_pair reports it
        elif content is None:
            raise DMPODataError(
                f"non-text content in message {i}: content is missing or None (expected a string)", row, side
            )
        if role == "tool":
            name = message.get("name") or names_by_id.get(message.get("tool_call_id"))
            if name is not None:
                out["name"] = name
            if message.get("tool_call_id") is not None:
                out["tool_call_id"] = message["tool_call_id"]
        result.append(out)
    return result


def from_openai(records: Iterable[Any], *, skip_invalid: bool = False, stream: bool = False) -> ConvertedRows:
    """Convert OpenAI-style preference rows (three layouts, see the module docstring) to the project format."""

    stats: dict[str, int] = {}

    def one(record: Mapping[str, Any], row: int) -> Row:
        tools: Any = record.get("tools") if record.get("tools") is not None else record.get("functions")
        if isinstance(record.get("input"), Mapping) and "preferred_output" in record:
            consumed = ["input", "preferred_output", "non_preferred_output"]
            prompt_raw, chosen_raw, rejected_raw = (
                record["input"].get("messages"),
                record["preferred_output"],
                record.get("non_preferred_output"),
            )
            tools = record["input"].get("tools", tools)
            if rejected_raw is None:
                raise DMPODataError("missing 'non_preferred_output'", row, "rejected")
        else:
            for side in ("chosen", "rejected"):
                if record.get(side) is None:
                    raise DMPODataError(
                        f"missing {side!r}: an OpenAI preference row needs 'chosen' and 'rejected' "
                        "(or 'input' + 'preferred_output' + 'non_preferred_output')",
                        row,
                        side,
                    )
            prompt_key = next((key for key in ("prompt", "messages") if record.get(key) is not None), None)
            consumed = ["chosen", "rejected"] + ([prompt_key] if prompt_key else [])
            prompt_raw = record[prompt_key] if prompt_key else None
            chosen_raw, rejected_raw = record["chosen"], record["rejected"]
        consumed += ["tools", "functions"]
        chosen = openai_messages(chosen_raw, "chosen", row)
        rejected = openai_messages(rejected_raw, "rejected", row)
        if prompt_raw is None:
            prompt, chosen, rejected = split_implicit(chosen, rejected, row, stats)
        else:
            prompt = openai_messages(prompt_raw, "prompt", row)
        out = {**metadata(record, consumed), "prompt": prompt, "chosen": chosen, "rejected": rejected}
        normalized = normalize_tools(tools, row)
        if normalized is not None:
            out["tools"] = normalized
        return out

    return convert_rows(records, one, skip_invalid=skip_invalid, stats=stats, stream=stream)


def _text(content: Any, index: int, side: str, row: int | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DMPODataError(
            f"non-text content in message {index}: content is {type(content).__name__} (expected a string)", row, side
        )
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        key = TEXT_PART_KEYS.get(kind) if isinstance(kind, str) else None
        if key is None or not isinstance(part.get(key), str):
            raise DMPODataError(
                f"non-text content in message {index}: a content part of type {kind!r} where text is needed", row, side
            )
        texts.append(part[key])
    return "\n".join(texts)


def _tool_calls(message: Mapping[str, Any], index: int, side: str, row: int | None) -> list[Row]:
    where = f"message {index}"
    raw = message.get("tool_calls") or []
    if not isinstance(raw, list):
        raise DMPODataError(f"malformed tool_calls in {where}: expected a list, got {type(raw).__name__}", row, side)
    calls = []
    for j, call in enumerate(raw):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise DMPODataError(f"malformed tool_calls in {where}: call {j} has no 'function' dict", row, side)
        calls.append(tool_call(function.get("name"), function.get("arguments"), where, row, side, call.get("id")))
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        calls.append(tool_call(legacy.get("name"), legacy.get("arguments"), where, row, side))
    elif legacy is not None:
        raise DMPODataError(f"malformed tool_calls in {where}: function_call must be a dict", row, side)
    return calls
