"""`dmpo_trl.core.rows.normalize`: what Arrow does to rows, undone by one rule; `arrow_safe` storage reads back exactly."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import check_pair, prepare_pair
from dmpo_trl.core.rows.normalize import arrow_safe, drop_none, normalize_pair, struct_columns
from dmpo_trl.core.rows.tokenization import tokenize_pair


def call(name, arguments, **extra):
    return {"type": "function", "function": {"name": name, "arguments": arguments}, **extra}


def tool_row(name: str, arguments, task: str = "Find a red scarf.") -> dict:
    return {
        "prompt": [{"role": "user", "content": task}],
        "chosen": [
            {"role": "assistant", "content": "", "tool_calls": [call(name, arguments)]},
            {"role": "tool", "content": "ok"},
            {"role": "assistant", "content": "Done."},
        ],
        "rejected": [{"role": "assistant", "content": "I cannot."}],
    }


ROWS = [tool_row("search", {"query": "red scarf", "page": 1}), tool_row("buy", {"id": "B01"}, "Buy B01.")]


def test_arrow_merges_dict_arguments_and_normalize_pair_undoes_it(tok):
    merged = Dataset.from_list(ROWS).to_list()  # what any Arrow-backed dataset hands out
    merged_args = merged[1]["chosen"][0]["tool_calls"][0]["function"]["arguments"]
    assert merged_args == {"query": None, "page": None, "id": "B01"}  # the trap: keys nobody wrote
    assert merged[0]["chosen"][1].get("tool_calls", "absent") is None  # and tool_calls: None on every message
    # Rendered as it comes, the merged row trains other tokens than the written one
    assert tokenize_pair(tok, merged[1]) != tokenize_pair(tok, ROWS[1])
    # normalize_pair gives back what was written, and prepare_pair trains exactly that
    assert [normalize_pair(r) for r in merged] == ROWS
    assert [prepare_pair(tok, r, i) for i, r in enumerate(merged)] == [
        prepare_pair(tok, r, i) for i, r in enumerate(ROWS)
    ]


def test_json_string_arguments_are_parsed_exactly_and_train_like_the_dict(tok):
    as_string = tool_row("search", json.dumps({"query": "red scarf", "page": 1}))
    assert normalize_pair(as_string) == ROWS[0]
    assert prepare_pair(tok, as_string) == prepare_pair(tok, ROWS[0])
    # TRL's Qwen2.5 template renders arguments with `tojson`: the raw string would come out quoted
    raw = tok.decode(tokenize_pair(tok, as_string)["chosen_ids"])
    assert '"arguments": "{\\"query\\"' in raw
    # an explicit null survives in a string (it is data), and is dropped from a dict (Arrow's fill-ins look the same)
    with_null = tool_row("search", '{"query": "scarf", "page": null}')
    assert normalize_pair(with_null)["chosen"][0]["tool_calls"][0]["function"]["arguments"] == {
        "query": "scarf",
        "page": None,
    }
    dict_null = tool_row("search", {"query": "scarf", "page": None, "filter": {"color": None, "size": 3}})
    assert normalize_pair(dict_null)["chosen"][0]["tool_calls"][0]["function"]["arguments"] == {
        "query": "scarf",
        "filter": {"size": 3},
    }
    empty = tool_row("search", "  ")
    assert normalize_pair(empty)["chosen"][0]["tool_calls"][0]["function"]["arguments"] == {}


def test_arrow_safe_round_trips_exactly_through_arrow(tok):
    rows = [
        tool_row("search", {"query": "héllo 😀", "n": 1, "x": 1.0, "tags": [None, "a"], "deep": {"k": [{"a": 1}]}}),
        tool_row("buy", {"id": "B01", "n": 1.5}),
        tool_row("buy", '{"id": "B02", "note": null}'),
    ]
    rows[0]["tools"] = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    back = Dataset.from_list([arrow_safe(r) for r in rows]).to_list()
    assert [normalize_pair(r) for r in back] == [normalize_pair(r) for r in rows]
    # int stays int next to a float (a merged struct would widen n=1 to 1.0), null inside a string survives
    args = [normalize_pair(r)["chosen"][0]["tool_calls"][0]["function"]["arguments"] for r in back]
    assert type(args[0]["n"]) is int and args[0]["x"] == 1.0 and args[2] == {"id": "B02", "note": None}
    assert [prepare_pair(tok, r) for r in back] == [prepare_pair(tok, r) for r in rows]
    widened = Dataset.from_list(rows[:2]).to_list()  # what a merged struct does to the numbers
    assert widened[0]["chosen"][0]["tool_calls"][0]["function"]["arguments"]["n"] == 1.0
    assert type(widened[0]["chosen"][0]["tool_calls"][0]["function"]["arguments"]["n"]) is float


def test_struct_columns_finds_merged_arguments_and_tools():
    rows = [dict(r, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]) for r in ROWS]
    merged = Dataset.from_list(rows)
    assert struct_columns(merged.features) == [
        "chosen[].tool_calls[].function.arguments",
        "tools[]",
    ]
    assert struct_columns(Dataset.from_list([arrow_safe(r) for r in rows]).features) == []


def test_normalize_never_raises_and_checks_name_what_is_left():
    bad = tool_row("search", "{not json")
    assert normalize_pair(bad) == bad  # left for the checks
    with pytest.raises(DMPODataError) as err:
        check_pair(bad, 4)
    assert (err.value.row, err.value.side) == (4, "chosen")
    assert err.value.reason.startswith("malformed tool_calls in message 0: call 0 arguments are not a JSON object:")
    with pytest.raises(DMPODataError, match=r"call 0 arguments are not a JSON object: it holds a JSON list"):
        check_pair(tool_row("search", "[1, 2]"))
    with pytest.raises(DMPODataError, match=r"^row 2: malformed tools: not a JSON list of tool schemas"):
        check_pair(dict(ROWS[0], tools="{oops"), 2)
    with pytest.raises(DMPODataError, match=r"^malformed tools: expected a list of tool schemas, got int"):
        check_pair(dict(ROWS[0], tools=3))
    assert normalize_pair(dict(ROWS[0], tools=None)) == ROWS[0]


def test_drop_none_keeps_list_items():
    assert drop_none({"a": None, "b": [None, {"c": None, "d": 1}], "e": {"f": None}}) == {
        "b": [None, {"d": 1}],
        "e": {},
    }
