"""ShareGPT conversations (`{"from", "value"}` messages) to the project format.

Roles as they occur in the wild (matched case-insensitively):

| ShareGPT `from`                                          | project message                              |
|----------------------------------------------------------|----------------------------------------------|
| human, user                                              | user                                         |
| gpt, assistant, chatgpt, bard, bing, model               | assistant                                    |
| system                                                   | system (first prompt message only)           |
| function_call                                            | assistant with `tool_calls` (value is JSON)  |
| observation, tool, function_response, function, ipython  | tool (named after the call it answers)       |

Pair layouts accepted (all may carry a `system` string and a `tools` list or JSON string; other keys are kept
as metadata):

1. LLaMA-Factory's ShareGPT preference format (github.com/hiyouga/LLaMA-Factory, `data/README.md`):
   `conversations` is the whole prompt (ends with a human/observation turn) and `chosen`/`rejected` are one
   gpt/function_call message each -- or, for multi-turn data, lists of messages.
2. `prompt` + `chosen` + `rejected`, all lists of messages (the ETO layout with any ShareGPT roles).
3. `chosen` + `rejected` only, each a full conversation: the prompt is their shared prefix
   (`dmpo_trl.data.common.split_shared_prefix`).
"""

from __future__ import annotations

import json
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
from dmpo_trl.data.eto import check_fastchat_keys


SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function_response": "tool",
    "function": "tool",
    "ipython": "tool",
}


def sharegpt_messages(messages: Any, side: str, row: int | None) -> list[Row]:
    """ShareGPT messages as project messages (see the module docstring for the role table)."""
    if isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, list):
        raise DMPODataError(
            f"{side!r} must be a list of {{from, value}} messages, got {type(messages).__name__}", row, side
        )
    result: list[Row] = []
    pending_names: list[str] = []
    for i, message in enumerate(messages):
        check_fastchat_keys(message, i, side, row)
        sender = message["from"]
        role = SHAREGPT_ROLES.get(sender.lower()) if isinstance(sender, str) else None
        if role is None:
            known = ", ".join(SHAREGPT_ROLES)
            raise DMPODataError(f"unknown role {sender!r} in message {i} (known ShareGPT roles: {known})", row, side)
        value = message.get("value")
        if not isinstance(value, str):
            raise DMPODataError(
                f"non-text content in message {i}: value is {type(value).__name__} (expected a string)", row, side
            )
        if sender.lower() == "function_call":
            calls = _function_calls(value, i, side, row)
            pending_names = [call["function"]["name"] for call in calls]
            result.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif role == "tool":
            out = {"role": "tool", "content": value}
            if pending_names:
                out["name"] = pending_names.pop(0)
            result.append(out)
        else:
            pending_names = []
            result.append({"role": role, "content": value})
    return result


def from_sharegpt(records: Iterable[Any], *, skip_invalid: bool = False, stream: bool = False) -> ConvertedRows:
    """Convert ShareGPT preference rows (three layouts, see the module docstring) to the project format."""

    stats: dict[str, int] = {}

    def one(record: Mapping[str, Any], row: int) -> Row:
        consumed = ["chosen", "rejected", "system", "tools"]
        prompt_key = next((key for key in ("conversations", "prompt") if key in record), None)
        for side in ("chosen", "rejected"):
            if record.get(side) is None:
                raise DMPODataError(
                    f"missing {side!r}: a ShareGPT preference row needs 'chosen' and 'rejected' (e.g. LLaMA-Factory's "
                    "'conversations' + 'chosen'/'rejected' messages)",
                    row,
                    side,
                )
        if prompt_key is not None:
            consumed.append(prompt_key)
            prompt = sharegpt_messages(record[prompt_key], "prompt", row)
            chosen = sharegpt_messages(record["chosen"], "chosen", row)
            rejected = sharegpt_messages(record["rejected"], "rejected", row)
        else:
            prompt, chosen, rejected = split_implicit(
                sharegpt_messages(record["chosen"], "chosen", row),
                sharegpt_messages(record["rejected"], "rejected", row),
                row,
                stats,
            )
        system = record.get("system")
        if system is not None and not isinstance(system, str):
            raise DMPODataError(
                f"non-text content: 'system' is {type(system).__name__} (expected a string)", row, "prompt"
            )
        if system and not (prompt and prompt[0]["role"] == "system"):
            prompt = [{"role": "system", "content": system}, *prompt]
        out = {**metadata(record, consumed), "prompt": prompt, "chosen": chosen, "rejected": rejected}
        tools = normalize_tools(record.get("tools"), row)
        if tools is not None:
            out["tools"] = tools
        return out

    return convert_rows(records, one, skip_invalid=skip_invalid, stats=stats, stream=stream)


def _function_calls(value: str, index: int, side: str, row: int | None) -> list[Row]:
    """A ShareGPT function_call value: JSON `{"name", "arguments"}` or a list of them."""
    where = f"message {index}"
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise DMPODataError(
            f"malformed tool_calls in {where}: function_call value is not valid JSON ({err})", row, side
        ) from err
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls:
        raise DMPODataError(f"malformed tool_calls in {where}: function_call value holds no call", row, side)
    result = []
    for call in calls:
        if not isinstance(call, Mapping):
            raise DMPODataError(f"malformed tool_calls in {where}: each call must be a JSON object", row, side)
        arguments = call.get("arguments", call.get("parameters"))
        result.append(tool_call(call.get("name"), arguments, where, row, side))
    return result
