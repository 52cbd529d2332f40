"""A row as the chat template sees it, whatever storage it came through: JSON, Parquet / Arrow or Python objects.

Arrow (`datasets`, Parquet, `load_dataset("json")`) stores a column of dicts as one struct type, the union of the keys
of every row, and fills the keys a row does not have with None: a message without `tool_calls` comes back with
`tool_calls: None`, and the tool-call arguments ``{"id": "B01"}`` come back as ``{"query": None, "id": "B01"}`` when
another row called a tool with a `query`. Rendered as they are, those are arguments nobody wrote. `normalize_pair`
undoes that by one rule, applied by `dmpo_trl.core.rows.checks.prepare_pair` and so on every entry path (`dmpo-trl train`,
`dmpo-trl validate`, a `datasets.Dataset` given to `DMPOTrainer`):

1. in a message, a tool call and its `function`, a key whose value is None is absent (every check treats a null like
   a missing key, so nothing a user can mean is lost);
2. tool-call `arguments` given as a dict, and `tools` given as a list of schemas: keys whose value is None are
   dropped at every depth. Arrow cannot tell its fill-ins from nulls a user wrote, so an explicit null survives only
   in a JSON string (3);
3. `arguments` given as a JSON string, and `tools` given as a JSON string, are parsed, exactly: the chat template
   always receives the object. TRL's and transformers' templates render arguments with ``tojson`` (a string would
   come out quoted, ``"{\\"id\\": ...}"``), so a dict and its JSON string train the same tokens.

Arrow also widens numbers inside a merged struct (an argument ``1`` stored next to ``1.5`` in another row reads back
as ``1.0``), which no rule can undo: store arguments and tools as JSON strings (`arrow_safe`; the converters,
`write_records` and the CLI loader do), and the round trip is exact. `struct_columns` finds the struct-typed ones of a
`datasets` schema, so the trainer can say so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


__all__ = ["MESSAGE_COLUMNS", "arrow_safe", "drop_none", "normalize_message", "normalize_pair", "struct_columns"]

MESSAGE_COLUMNS = ("prompt", "chosen", "rejected")


def drop_none(value: Any) -> Any:
    """`value` with every dict key whose value is None removed, at every depth (None items of lists stay)."""
    if isinstance(value, Mapping):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if _is_list(value):
        return [drop_none(v) for v in value]
    return value


def normalize_pair(example: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `example` with the message columns, `tools` and `chat_template_kwargs` normalized (rules 1-3 above).

    Never raises: what is still malformed afterwards (an argument string that is not JSON, a message that is not a
    dict, ...) is left as it is for `dmpo_trl.core.rows.checks.check_pair` to report.
    """
    out = dict(example)
    for key in MESSAGE_COLUMNS:
        if _is_list(out.get(key)):
            out[key] = [normalize_message(m) for m in out[key]]
    tools = out.get("tools")
    if tools is None:
        out.pop("tools", None)
    elif isinstance(tools, str):
        parsed = _parse(tools)
        out["tools"] = parsed if _is_list(parsed) else tools
    elif _is_list(tools):
        out["tools"] = drop_none(tools)
    kwargs = out.get("chat_template_kwargs")
    if kwargs is None:
        out.pop("chat_template_kwargs", None)
    elif isinstance(kwargs, Mapping):
        out["chat_template_kwargs"] = {k: v for k, v in kwargs.items() if v is not None}
    return out


def normalize_message(message: Any) -> Any:
    """One message: None-valued keys removed; its tool calls' None keys removed and their arguments as objects."""
    if not isinstance(message, Mapping):
        return message
    out = {k: v for k, v in message.items() if v is not None}
    if _is_list(out.get("tool_calls")):
        out["tool_calls"] = [_normalize_call(call) for call in out["tool_calls"]]
    return out


def _normalize_call(call: Any) -> Any:
    if not isinstance(call, Mapping):
        return call
    out = {k: v for k, v in call.items() if v is not None}
    function = out.get("function")
    if isinstance(function, Mapping):
        function = {k: v for k, v in function.items() if v is not None}
        if "arguments" in function:
            function["arguments"] = _arguments_object(function["arguments"])
        out["function"] = function
    return out


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, Mapping):
        return drop_none(arguments)
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}
        parsed = _parse(arguments)
        return parsed if isinstance(parsed, dict) else arguments
    return arguments


_INVALID = object()


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID


def arrow_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` in a form Arrow stores exactly: tool-call arguments and `tools` as JSON strings.

    A dict is written as the JSON of what rule 2 makes of it (None values dropped), so `normalize_pair` reads back the
    same object from the string as from the dict; a string is kept as it is. Everything else is unchanged.
    """
    out = dict(row)
    for key in MESSAGE_COLUMNS:
        if _is_list(out.get(key)):
            out[key] = [_encode_message(m) for m in out[key]]
    if _is_list(out.get("tools")):
        out["tools"] = _dumps(drop_none(out["tools"]))
    return out


def _encode_message(message: Any) -> Any:
    if not isinstance(message, Mapping) or not _is_list(message.get("tool_calls")):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("arguments"), Mapping):
            call = {**call, "function": {**function, "arguments": _dumps(drop_none(function["arguments"]))}}
        calls.append(call)
    return {**message, "tool_calls": calls}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def struct_columns(features: Any) -> list[str]:
    """Where a `datasets` schema stores tool-call arguments or `tools` as Arrow structs (merged across rows), e.g.
    ``["chosen[].tool_calls[].function.arguments"]``; empty when they are JSON strings or absent."""
    if not isinstance(features, Mapping):
        return []
    found: list[str] = []

    def walk(feature: Any, path: str, key: str) -> None:
        inner = getattr(feature, "feature", None)  # datasets.List / Sequence / LargeList
        if isinstance(feature, list):
            inner = feature[0] if feature else None
        if inner is not None:
            walk(inner, path + "[]", key)
        elif isinstance(feature, Mapping):
            if key in ("arguments", "tools"):
                found.append(path)
                return
            for name, sub in feature.items():
                walk(sub, f"{path}.{name}", name)

    for column, feature in features.items():
        if column in MESSAGE_COLUMNS or column == "tools":
            walk(feature, column, column)
    return found


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, Mapping))
