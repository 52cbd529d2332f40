"""Property: random agent conversations (tool calls with heterogeneous arguments, emoji / RTL text, extra keys)
written as JSONL and as Parquet, read every way a user reads them, give the trainer identical token ids and weights,
equal to those of the rows as written.

Three kinds of datasets:

- ``strings``: tool-call arguments are JSON strings (what the converters write): any JSON, explicit nulls, any key
  order; every path is exact, Arrow-merged ones included;
- ``dicts``: arguments are dicts in any key order, with nulls: exact through the project's files (JSONL, Parquet by
  `write_records`) read by the project's loader or by `datasets`;
- ``merged``: arguments are dicts whose keys follow one order, and the first call of each side holds every key, so
  that an Arrow struct's field order (first seen) is the written order: then even data merged by Arrow elsewhere
  (`Dataset.from_list`, `Dataset.from_list(...).to_parquet`) trains exactly what was written. (Arrow keeps one
  field order per struct, so data merged with other key orders cannot be restored: one more reason to store
  arguments as JSON strings. And `load_dataset("json")` of datasets 5.2 stores dicts whose keys differ between rows
  as its `Json` type, which rounds floats to 10 significant digits: 2.5000100135803223 reads back as
  2.5000100136, so that path is exact only for JSON-string arguments.)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dmpo_trl.core.collator import DataCollatorForDMPO
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import prepare_pair
from dmpo_trl.core.rows.preparation import prepare_dataset
from dmpo_trl.data.io import write_records
from dmpo_trl.data.loading import load_preference_files
from tests.core.helpers import make_args


TEXT = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8),
    st.sampled_from(["Action: look", "é😀", "مرحبا بالعالم", "\u200fשלום", "a\nb", "  ", "{}", '"q"']),
)
ORDER = ("query", "page", "price", "filter", "tags")
# One JSON type per key (an Arrow struct needs it); None is what Arrow fills in, so it may occur in dicts
VALUES = {
    "query": TEXT,
    "page": st.one_of(st.none(), st.integers(-3, 10**6)),
    "price": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: x + 0.5)),
    # a struct needs at least one field: Parquet cannot store an empty one (no such file can exist)
    "filter": st.one_of(st.none(), st.fixed_dictionaries({"color": TEXT}, optional={"size": st.integers(0, 9)})),
    "tags": st.one_of(st.none(), st.lists(TEXT, max_size=2)),
}
ANY_ORDER_DICT = st.fixed_dictionaries({"query": TEXT}, optional={k: VALUES[k] for k in ORDER[1:]}).flatmap(
    lambda d: st.permutations(list(d)).map(lambda keys: {k: d[k] for k in keys})
)


def in_order(d: dict) -> dict:
    """`d` (and its `filter`) with the keys in ORDER (("color", "size") inside `filter`)."""
    out = {k: d[k] for k in ORDER if k in d}
    if isinstance(out.get("filter"), dict):
        out["filter"] = {k: out["filter"][k] for k in ("color", "size") if k in out["filter"]}
    return out


ORDERED_DICT = st.fixed_dictionaries({"query": TEXT}, optional={k: VALUES[k] for k in ORDER[1:]}).map(in_order)
FULL_DICT = st.fixed_dictionaries(
    {
        "query": TEXT,
        "page": st.integers(0, 9),
        "price": st.just(1.5),
        "filter": st.fixed_dictionaries({"color": TEXT, "size": st.integers(0, 9)}),
        "tags": st.lists(TEXT, min_size=1, max_size=2),
    }
).map(in_order)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-9, 9), st.floats(allow_nan=False, allow_infinity=False), TEXT),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(TEXT, inner, max_size=2),
    max_leaves=5,
)
STRING_ARGS = st.dictionaries(st.sampled_from(["query", "page", "x", "é"]), JSON_VALUES, max_size=3).map(
    lambda d: json.dumps(d, ensure_ascii=False)
)
ARGUMENTS = {"strings": STRING_ARGS, "dicts": ANY_ORDER_DICT, "merged": ORDERED_DICT}


def tool_call_turn(draw, name: str, arguments, t: int) -> list[dict]:
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if draw(st.booleans()):
        call["id"] = f"call_{t}"
    result = {"role": "tool", "content": draw(TEXT)}
    if draw(st.booleans()):
        result["name"] = name
    content = draw(st.sampled_from(["", "Let me check."]))
    return [{"role": "assistant", "content": content, "tool_calls": [call]}, result]


@st.composite
def side(draw, mode: str, first: bool):
    messages = []
    if mode == "merged" and first:  # every key, in ORDER: the struct's fields come out in the written order
        messages += tool_call_turn(draw, "search", draw(FULL_DICT), 0)
    for t in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            messages += tool_call_turn(
                draw, draw(st.sampled_from(["search", "buy", "look"])), draw(ARGUMENTS[mode]), t
            )
        else:
            messages.append({"role": "assistant", "content": "Action: " + draw(TEXT)})
            messages.append({"role": "user", "content": "Observation: " + draw(TEXT)})
    if draw(st.booleans()):
        messages.pop()  # end with an action
    return messages


@st.composite
def pair(draw, index: int, mode: str):
    prompt = [{"role": "user", "content": f"Task {index}: " + draw(TEXT)}]
    if draw(st.booleans()):
        prompt.insert(0, {"role": "system", "content": draw(TEXT)})
    sides = {}
    for name in ("chosen", "rejected"):
        first = [{"role": "assistant", "content": f"{name} {index}."}, {"role": "user", "content": "ok"}]
        sides[name] = first + draw(side(mode, index == 0))
    row = {"prompt": prompt, **sides}
    if draw(st.booleans()):  # metadata columns, in some rows only
        row["id"] = index
        row["meta"] = {"source": draw(TEXT)}
    return row


DATASETS = st.tuples(st.sampled_from(sorted(ARGUMENTS)), st.integers(2, 4)).flatmap(
    lambda spec: st.tuples(st.just(spec[0]), st.tuples(*(pair(i, spec[0]) for i in range(spec[1]))).map(list))
)


def trained_view(dataset, tok, tmp: Path):
    """What the trainer trains on: `prepare_dataset` (the trainer's preparation) and its collator's batch."""
    prepared, _ = prepare_dataset(dataset, tok, make_args(tmp, max_length=None), "train")
    rows = [prepared[i] for i in range(len(prepared))]
    batch = DataCollatorForDMPO(pad_token_id=tok.pad_token_id, gamma=0.7)(rows)
    columns = ("prompt_ids", "chosen_ids", "rejected_ids", "chosen_turn_ids", "rejected_turn_ids")
    return [tuple(r[c] for c in columns) for r in rows], batch["input_ids"], batch["dmpo_weights"]


def outcome(dataset, tok, tmp: Path):
    try:
        return trained_view(dataset, tok, tmp)
    except DMPODataError as err:  # a row the trainer refuses must be refused the same way on every path
        return str(err)


def readers(mode: str, rows: list[dict], tmp: Path) -> dict:
    write_records(rows, tmp / "pairs.jsonl")
    write_records(rows, tmp / "pairs.parquet")  # arguments and tools as JSON strings
    cache = str(tmp / "cache")
    found = {
        "jsonl, dmpo loader": lambda: load_preference_files([str(tmp / "pairs.jsonl")]).dataset,
        "parquet, dmpo loader": lambda: load_preference_files([str(tmp / "pairs.parquet")]).dataset,
        "parquet, load_dataset": lambda: load_dataset(
            "parquet", data_files=str(tmp / "pairs.parquet"), split="train", cache_dir=cache
        ),
    }
    if mode in ("strings", "merged"):  # Arrow merges these itself
        Dataset.from_list(rows).to_parquet(str(tmp / "merged.parquet"))
        found["merged parquet, dmpo loader"] = lambda: load_preference_files([str(tmp / "merged.parquet")]).dataset
        found["merged parquet, load_dataset"] = lambda: load_dataset(
            "parquet", data_files=str(tmp / "merged.parquet"), split="train", cache_dir=cache
        )
        found["Dataset.from_list"] = lambda: Dataset.from_list(rows)
    if mode == "strings":  # datasets 5.2 stores dicts with differing keys as its `Json` type, which rounds floats
        found["jsonl, load_dataset"] = lambda: load_dataset(
            "json", data_files=str(tmp / "pairs.jsonl"), split="train", cache_dir=cache
        )
    return found


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=DATASETS)
def test_jsonl_and_parquet_train_the_same_tokens_and_weights(tok, data):
    mode, rows = data
    calls = sum(bool(m.get("tool_calls")) for r in rows for side in ("chosen", "rejected") for m in r[side])
    event(f"{mode}, {'with' if calls else 'without'} tool calls")
    try:
        reference = [prepare_pair(tok, row, i) for i, row in enumerate(rows)]  # the rows as written
    except DMPODataError as err:
        reference = str(err)
    with tempfile.TemporaryDirectory() as tmp:
        views = {name: outcome(read(), tok, Path(tmp)) for name, read in readers(mode, rows, Path(tmp)).items()}
    if isinstance(reference, str):
        assert all(view == reference for view in views.values()), views
        return
    expected = [
        (r["prompt_ids"], r["chosen_ids"], r["rejected_ids"], r["chosen_turn_ids"], r["rejected_turn_ids"])
        for r in reference
    ]
    _, base_input, base_weights = views["jsonl, dmpo loader"]
    for name, view in views.items():
        assert not isinstance(view, str), (name, view)
        ids, input_ids, weights = view
        assert ids == expected, name
        assert torch.equal(input_ids, base_input) and torch.equal(weights, base_weights), name
