"""Helpers shared by the converters: the result type, the row loop, tool-call and tool-schema normalisation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import check_pair


Row = dict[str, Any]


@dataclass(frozen=True)
class SkippedRow:
    """A row left out because it failed a check (only with `skip_invalid=True`); `source`: its file, if known."""

    row: int | None
    reason: str
    source: str | None = None


class ConvertedRows(list):
    """The rows a converter produced (a plain `list` of dicts), plus what it left out and why.

    `skipped` lists rows dropped with `skip_invalid=True` and their reasons; `stats` holds converter-specific
    counts (for ETO rollouts: wins, ties, losses, rows dropped and why). Nothing is dropped without a count.
    """

    def __init__(
        self, rows: Iterable[Row] = (), skipped: list[SkippedRow] | None = None, stats: dict[str, int] | None = None
    ) -> None:
        super().__init__(rows)
        self.skipped: list[SkippedRow] = list(skipped or [])
        self.stats: dict[str, int] = dict(stats or {})

    def summary(self) -> str:
        """One line per count and per skipped row, for printing."""
        lines = [f"rows: {len(self)}"]
        lines += [f"{key}: {value}" for key, value in self.stats.items()]
        lines.append(f"skipped: {len(self.skipped)}")
        lines += [f"  row {s.row}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


class StreamedRows:
    """The rows a converter produces, one at a time as they are iterated (once), for inputs too big to hold.

    `skipped` and `stats` fill as the rows are read (complete once the iteration ends); `count` is the rows yielded.
    """

    def __init__(self, rows: Iterator[Row], skipped: list[SkippedRow], stats: dict[str, int]) -> None:
        self._rows = rows
        self.skipped = skipped
        self.stats = stats
        self.count = 0

    def __iter__(self) -> Iterator[Row]:
        for row in self._rows:
            self.count += 1
            yield row


def convert_rows(
    records: Iterable[Any],
    convert_one: Callable[[Mapping[str, Any], int], Row],
    *,
    skip_invalid: bool = False,
    stats: dict[str, int] | None = None,
    stream: bool = False,
) -> ConvertedRows | StreamedRows:
    """Apply `convert_one(record, row)` to every record and `check_pair` to its output.

    The first bad row raises `DMPODataError` (naming the row); with `skip_invalid=True` bad rows are left out
    and listed in the result's `skipped`. `stats` (filled by `convert_one` as it goes) becomes the result's `stats`.
    With `stream=True` the result is a `StreamedRows`: nothing is converted until it is iterated, and no row is kept.
    """
    stats = stats if stats is not None else {}
    if stream:
        skipped: list[SkippedRow] = []
        return StreamedRows(_converted(records, convert_one, skip_invalid, skipped), skipped, stats)
    result = ConvertedRows()
    result.extend(_converted(records, convert_one, skip_invalid, result.skipped))
    result.stats = dict(stats)
    return result


def _converted(
    records: Iterable[Any],
    convert_one: Callable[[Mapping[str, Any], int], Row],
    skip_invalid: bool,
    skipped: list[SkippedRow],
) -> Iterator[Row]:
    for row, record in enumerate(records):
        try:
            if not isinstance(record, Mapping):
                raise DMPODataError(f"a record must be a JSON object, got {type(record).__name__}", row)
            converted = convert_one(record, row)
            check_pair(converted, row)
        except DMPODataError as err:
            err = with_record_id(err, record)
            if not skip_invalid:
                raise err
            skipped.append(SkippedRow(row, str(err)))
            continue
        yield converted


def split_shared_prefix(
    chosen: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]], row: int | None = None
) -> tuple[list[Row], list[Row], list[Row]]:
    """Split two full conversations into (prompt, chosen, rejected) for rows without an explicit prompt.

    The split goes at the first message where the two differ; when that message is not an assistant action on
    both sides (e.g. identical actions followed by different observations), the split moves back to the
    latest earlier position where both sides have an assistant message, so both continuations start with an
    action. Identical leading actions therefore become part of the prompt (they carry no weight).
    Raises `DMPODataError` when the two share no prefix, are identical, or first differ before any action
    (their prompts differ).
    """
    n = min(len(chosen), len(rejected))
    k = next((i for i in range(n) if chosen[i] != rejected[i]), n)
    if k == len(chosen) == len(rejected):
        raise DMPODataError("chosen and rejected are identical conversations", row)
    if k == 0:
        raise DMPODataError(
            "prompt differs between chosen and rejected: they share no prefix (message 0 differs); "
            "give the shared context as an explicit 'prompt' column",
            row,
        )
    j = k
    while j > 0 and not (_role_at(chosen, j) == "assistant" and _role_at(rejected, j) == "assistant"):
        j -= 1
    if j == 0:
        raise DMPODataError(
            f"prompt differs between chosen and rejected: they first differ at message {k} "
            f"({_role_at(chosen, k)!r} vs {_role_at(rejected, k)!r}), before any assistant action",
            row,
        )
    return list(chosen[:j]), list(chosen[j:]), list(rejected[j:])


def split_implicit(chosen: list[Row], rejected: list[Row], row: int, stats: dict[str, int]) -> tuple[list, list, list]:
    """`split_shared_prefix`, counting rows split this way and those whose prompt then holds assistant messages."""
    prompt, chosen, rejected = split_shared_prefix(chosen, rejected, row)
    stats["implicit_prompt_rows"] = stats.get("implicit_prompt_rows", 0) + 1
    if any(m["role"] == "assistant" for m in prompt):
        stats["implicit_prompt_with_assistant"] = stats.get("implicit_prompt_with_assistant", 0) + 1
    return prompt, chosen, rejected


def with_record_id(err: DMPODataError, record: Any) -> DMPODataError:
    """The same error with the record's `id` (when it has one) appended to the reason, to find the row."""
    if isinstance(record, Mapping) and record.get("id") is not None and "(id=" not in err.reason:
        return DMPODataError(f"{err.reason} (id={record['id']!r})", err.row, err.side)
    return err


def metadata(record: Mapping[str, Any], consumed: Iterable[str]) -> Row:
    """The record's keys other than `consumed`, kept as metadata columns."""
    skip = set(consumed)
    return {key: value for key, value in record.items() if key not in skip}


class _NotJSONConstant(ValueError):
    pass


def _no_constant(name: str):
    raise _NotJSONConstant(name)


def parse_arguments(arguments: Any, where: str, row: int | None, side: str | None) -> str:
    """Tool-call arguments as a JSON string of an object, the form that survives Arrow (`dmpo_trl.core.rows.normalize`).

    A dict is written with `json.dumps` (explicit nulls kept); a string must hold a JSON object and is kept as it is;
    None or an empty string is ``"{}"``. The trainer parses the string, so the chat template gets the object.
    """
    not_json = (
        f"malformed tool_calls in {where}: arguments hold NaN or Infinity, which JSON has no spelling for (the "
        "written file would not be JSON); give a number, null or a string"
    )
    if arguments is None:
        return "{}"
    if isinstance(arguments, Mapping):
        try:
            return json.dumps(dict(arguments), ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise DMPODataError(not_json, row, side) from None
    if isinstance(arguments, str):
        if not arguments.strip():
            return "{}"
        try:
            parsed = json.loads(arguments, parse_constant=_no_constant)
        except _NotJSONConstant:
            raise DMPODataError(not_json, row, side) from None
        except json.JSONDecodeError as err:
            raise DMPODataError(
                f"malformed tool_calls in {where}: arguments are not valid JSON ({err})", row, side
            ) from err
        if not isinstance(parsed, dict):
            raise DMPODataError(f"malformed tool_calls in {where}: arguments must be a JSON object", row, side)
        return arguments
    raise DMPODataError(
        f"malformed tool_calls in {where}: arguments must be a dict or a JSON string, got {type(arguments).__name__}",
        row,
        side,
    )


def tool_call(name: Any, arguments: Any, where: str, row: int | None, side: str | None, call_id: Any = None) -> Row:
    """One HF-format tool call: `{"type": "function", "function": {"name", "arguments": JSON string}}` (+ `id`)."""
    if not isinstance(name, str) or not name:
        raise DMPODataError(f"malformed tool_calls in {where}: a call has no function name", row, side)
    call: Row = {
        "type": "function",
        "function": {"name": name, "arguments": parse_arguments(arguments, where, row, side)},
    }
    if call_id is not None:
        call["id"] = call_id
    return call


def normalize_tools(tools: Any, row: int | None) -> str | None:
    """Tool schemas as the JSON string of a list of `{"type": "function", "function": {...}}` dicts (a string survives
    Arrow, which would merge the schemas of all rows); JSON strings are parsed first.

    Bare function schemas (`{"name", "description", "parameters"}`, as LLaMA-Factory stores them) are wrapped.
    Empty values give None.
    """
    if tools is None or (isinstance(tools, str) and not tools.strip()):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise DMPODataError(f"malformed tools: not valid JSON ({err})", row) from err
    if isinstance(tools, Mapping):
        tools = [tools]
    if not isinstance(tools, list):
        raise DMPODataError(f"malformed tools: expected a list of tool schemas, got {type(tools).__name__}", row)
    result = []
    for i, tool in enumerate(tools):
        if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
            result.append({"type": tool.get("type", "function"), **{k: v for k, v in tool.items() if k != "type"}})
        elif isinstance(tool, Mapping) and isinstance(tool.get("name"), str):
            result.append({"type": "function", "function": dict(tool)})
        else:
            raise DMPODataError(f"malformed tools: tool {i} is neither a function schema nor {{'function': ...}}", row)
    return json.dumps(result, ensure_ascii=False) if result else None


def _role_at(messages: Sequence[Mapping[str, Any]], i: int) -> Any:
    if i >= len(messages):
        return None
    message = messages[i]
    return message.get("role") if isinstance(message, Mapping) else None
