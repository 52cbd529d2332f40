"""Bad input: every malformed case yields `DMPODataError` naming the row and its specific reason.

Plus a property test over random conversations: converters and validation never fail with anything but
`DMPODataError`, and a row they accept never has an empty action mask on either side.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.normalize import normalize_pair
from dmpo_trl.core.rows.tokenization import NOT_ACTION, tokenize_pair, truncate_trajectory
from dmpo_trl.data.convert import from_eto_pairs, from_openai, from_project, from_sharegpt
from dmpo_trl.data.io import read_records
from dmpo_trl.data.validation import validate_dataset, validate_row
from dmpo_trl.testing import agent_pair
from tests.data import records as rec


def good() -> dict:
    return agent_pair(2, 2)


def with_(**changes) -> dict:
    row = good()
    row.update(changes)
    return row


def A(content="Action: look", **extra):  # noqa: N802
    return {"role": "assistant", "content": content, **extra}


def U(content="Observation: a door."):  # noqa: N802
    return {"role": "user", "content": content}


# (case id, bad row, side named in the error or None, exact reason)
PROJECT_CASES = [
    ("empty chosen", with_(chosen=[]), "chosen", "empty chosen: the chosen continuation has no messages"),
    ("empty rejected", with_(rejected=[]), "rejected", "empty rejected: the rejected continuation has no messages"),
    (
        "missing rejected",
        {k: v for k, v in good().items() if k != "rejected"},
        "rejected",
        "missing 'rejected': a pair needs 'chosen' and 'rejected'",
    ),
    ("no action", with_(rejected=[U()]), "rejected", "no assistant action in rejected (roles: 'user')"),
    (
        "starts with observation",
        with_(chosen=[U(), A()]),
        "chosen",
        "roles out of order: chosen starts with a 'user' message; a continuation must start with an assistant action",
    ),
    (
        "two actions in a row",
        with_(chosen=[A(), A("Action: wait")]),
        "chosen",
        "roles out of order: messages 0 and 1 are consecutive assistant actions with no observation between them",
    ),
    (
        "system inside a side",
        with_(rejected=[A(), {"role": "system", "content": "x"}, A()]),
        "rejected",
        "roles out of order: system message at position 1; system messages are only allowed at the start of the prompt",
    ),
    (
        "system not first in prompt",
        with_(prompt=[U("task"), {"role": "system", "content": "x"}, U("more")]),
        "prompt",
        "roles out of order: system message at position 1; system messages are only allowed at the start of the prompt",
    ),
    (
        "tool result after user",
        with_(chosen=[A(), U(), {"role": "tool", "content": "42"}, A()]),
        "chosen",
        "roles out of order: tool message 2 follows a 'user' message; tool results must follow an assistant action or "
        "another tool result",
    ),
    (
        "prompt ends with assistant",
        with_(prompt=[U("task"), A("OK")]),
        "prompt",
        "roles out of order: the prompt ends with an assistant message (message 1); the first action of "
        "chosen/rejected "
        "must follow a user or tool message",
    ),
    ("empty prompt", with_(prompt=[]), "prompt", "empty prompt: the prompt has no messages"),
    (
        "unknown role",
        with_(chosen=[A(), {"role": "environment", "content": "x"}, A()]),
        "chosen",
        "unknown role 'environment' in message 1 (expected one of system, user, assistant, tool)",
    ),
    (
        "image content",
        with_(prompt=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]),
        "prompt",
        "non-text content in message 0: a content part of type 'image' where text is needed",
    ),
    (
        "text parts",
        with_(chosen=[A([{"type": "text", "text": "Action: look"}])]),
        "chosen",
        "non-text content in message 0: content is a list of text parts (expected a string; join them, or convert "
        "with --from openai)",
    ),
    (
        "number content",
        with_(rejected=[A(7)]),
        "rejected",
        "non-text content in message 0: content is int (expected a string)",
    ),
    (
        "None content",
        with_(chosen=[A(), U(None), A()]),
        "chosen",
        "non-text content in message 1: content is missing or None (expected a string)",
    ),
    (
        "string prompt",
        with_(prompt="Task: find the coin."),
        "prompt",
        "mixed formats: the prompt is a plain string but chosen/rejected are lists of messages; give the prompt "
        "as messages too, or the whole row as plain text (the standard format)",
    ),
    (
        "string side",
        with_(chosen="Action: look"),
        "rejected",
        "mixed formats: the row is standard (plain text) but 'rejected' is of type list; standard rows need 'chosen' "
        "and 'rejected' strings (and a 'prompt' string or none), conversational rows lists of messages",
    ),
    (
        "empty action",
        with_(chosen=[A("  ")]),
        "chosen",
        "empty action: assistant message 0 has no content and no tool_calls",
    ),
    (
        "tool call without name",
        with_(chosen=[A("", tool_calls=[{"type": "function", "function": {"arguments": {}}}])]),
        "chosen",
        "malformed tool_calls in message 0: call 0 has no function name",
    ),
    (
        "tool calls on a user message",
        with_(prompt=[{"role": "user", "content": "x", "tool_calls": [{}]}]),
        "prompt",
        "malformed tool_calls in message 0: only assistant messages may carry tool_calls",
    ),
    (
        "message not a dict",
        with_(rejected=[A(), "Observation: x", A()]),
        "rejected",
        "message 1 is not a dict with 'role' and 'content' (got str)",
    ),
    (
        "implicit prompt differs",
        {"chosen": [U("Task: find the coin."), A()], "rejected": [U("Task: find the key."), A()]},
        None,
        "the prompt differs between chosen and rejected (messages before the first assistant message must be "
        "identical)",
    ),
]


@pytest.mark.parametrize("case, bad, side, reason", PROJECT_CASES, ids=[c[0] for c in PROJECT_CASES])
def test_project_rows_each_error_names_row_and_reason(tok, case, bad, side, reason):
    rows = [good(), copy.deepcopy(bad), good()]
    # the converter path (structure only) ...
    with pytest.raises(DMPODataError) as err:
        from_project(copy.deepcopy(rows))
    assert (err.value.row, err.value.side, err.value.reason) == (1, side, reason)
    # ... and the validation path (structure, then tokenization) give the same error
    with pytest.raises(DMPODataError) as err:
        validate_dataset(copy.deepcopy(rows), tok, progress=False)
    assert (err.value.row, err.value.side, err.value.reason) == (1, side, reason)
    prefix = f"row 1, {side}: " if side else "row 1: "
    assert str(err.value) == prefix + reason


def test_skip_invalid_reports_every_bad_row_and_its_reason(tok):
    rows = [good()] + [copy.deepcopy(case[1]) for case in PROJECT_CASES] + [good()]
    report = validate_dataset(rows, tok, skip_invalid=True, progress=False)
    assert (report.rows, report.pairs) == (len(PROJECT_CASES) + 2, 2)
    assert [s.row for s in report.skipped] == list(range(1, len(PROJECT_CASES) + 1))
    assert [s.reason.split(": ", 1)[1] for s in report.skipped] == [case[3] for case in PROJECT_CASES]


def test_chat_template_that_breaks_the_prefix_property(tok):
    tokenizer = copy.deepcopy(tok)
    # renders the number of messages first, so a prefix of the conversation is not a prefix of its rendering
    tokenizer.chat_template = (
        "{{ messages | length }}\n{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(DMPODataError, match=r"^row 0, chosen: the chat template breaks the prefix property"):
        validate_dataset([good()], tokenizer, progress=False)


def test_chat_template_that_rejects_a_role(tok):
    tokenizer = copy.deepcopy(tok)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tool role here') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    row = with_(chosen=[A(), {"role": "tool", "content": "42"}, A()])
    with pytest.raises(DMPODataError, match=r"^row 0, chosen: the chat template rejected the conversation .*no tool"):
        validate_dataset([row], tokenizer, progress=False)


def test_chat_template_whose_tokens_straddle_the_action_boundary(tok):
    tokenizer = copy.deepcopy(tok)
    # "assistant: " + content: the space before the action merges into the action's first token
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(
        DMPODataError,
        match=r"^row 0, chosen: cannot align tokens with the chat template: a token "
        r"spans the start of action 0",
    ):
        validate_dataset([good()], tokenizer, progress=False)


def test_chat_template_without_end_of_turn_token(tok):
    tokenizer = copy.deepcopy(tok)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m.role }}:\n{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:\n"
        "{% endif %}"
    )
    with pytest.raises(DMPODataError, match=r"^row 0, chosen: action 0 has no end-of-turn token"):
        validate_dataset([good()], tokenizer, progress=False)


def test_side_with_no_action_after_truncation(tok):
    row = good()
    prompt_len = len(tokenize_pair(tok, row)["prompt_ids"])
    with pytest.raises(DMPODataError) as err:
        validate_dataset([good(), row], tok, max_length=prompt_len + 3, skip_invalid=False, progress=False)
    assert (err.value.row, err.value.side) == (0, "chosen")
    assert err.value.reason.startswith(f"no action fits within max_length={prompt_len + 3}: the first action ends at")
    # by default (skip_invalid unset) such rows are dropped and counted, as the trainer does
    report = validate_dataset([good(), row], tok, max_length=prompt_len + 3, progress=False)
    assert len(report.skipped) == 2


# --------------------------------------------------------------------------------------------- converter-specific
CONVERTER_CASES = [
    (
        "eto unknown role",
        from_eto_pairs,
        {**rec.eto_pair(), "chosen": [rec.fc("system", "x")]},
        "chosen",
        "unknown role 'system' in message 0 (ETO/FastChat messages use 'human' or 'gpt'; convert other ShareGPT data "
        "with --from sharegpt) (id='webshop_1043')",
    ),
    (
        "eto value not text",
        from_eto_pairs,
        {**rec.eto_pair(), "rejected": [rec.fc("gpt", None)]},
        "rejected",
        "non-text content in message 0: value is NoneType (expected a string) (id='webshop_1043')",
    ),
    (
        "eto missing prompt",
        from_eto_pairs,
        {"id": 3, "chosen": [], "rejected": []},
        "prompt",
        "missing 'prompt': an ETO pair needs 'prompt', 'chosen' and 'rejected' (id=3)",
    ),
    (
        "eto OK as last prompt message",
        from_eto_pairs,
        {**rec.eto_pair(), "prompt": rec.eto_pair()["prompt"][:2]},
        "prompt",
        "roles out of order: the prompt ends with an assistant message (message 1); the first action of "
        "chosen/rejected must follow a user or tool message (id='webshop_1043')",
    ),
    (
        "sharegpt bad function_call",
        from_sharegpt,
        {**rec.llamafactory_pair(), "chosen": rec.fc("function_call", "buy")},
        "chosen",
        "malformed tool_calls in message 0: function_call value is not valid JSON (Expecting value: line 1 "
        "column 1 (char 0))",
    ),
    (
        "sharegpt unknown role",
        from_sharegpt,
        {**rec.llamafactory_pair(), "rejected": rec.fc("narrator", "x")},
        "rejected",
        "unknown role 'narrator' in message 0 (known ShareGPT roles: human, user, gpt, assistant, chatgpt, "
        "bard, bing, model, system, function_call, observation, tool, function_response, function, ipython)",
    ),
    (
        "sharegpt sft row",
        from_sharegpt,
        {"conversations": [rec.fc("human", "hi"), rec.fc("gpt", "hello")]},
        "chosen",
        "missing 'chosen': a ShareGPT preference row needs 'chosen' and 'rejected' (e.g. LLaMA-Factory's "
        "'conversations' + 'chosen'/'rejected' messages)",
    ),
    (
        "sharegpt bad tools",
        from_sharegpt,
        {**rec.llamafactory_pair(), "tools": "[{"},
        None,
        "malformed tools: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 3 (char 2))",
    ),
    (
        "sharegpt prompt ends with gpt",
        from_sharegpt,
        {**rec.llamafactory_pair(), "conversations": [rec.fc("human", "hi"), rec.fc("gpt", "hello")]},
        "prompt",
        "roles out of order: the prompt ends with an assistant message (message 2); the first action of "
        "chosen/rejected must follow a user or tool message",
    ),
    (
        "openai bad arguments",
        from_openai,
        {
            "prompt": [U("q")],
            "rejected": [A()],
            "chosen": [
                A(
                    None,
                    tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{'x': 1}"}}],
                )
            ],
        },
        "chosen",
        "malformed tool_calls in message 0: arguments are not valid JSON (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))",
    ),
    (
        "openai image",
        from_openai,
        {
            "prompt": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "chosen": [A()],
            "rejected": [A()],
        },
        "prompt",
        "non-text content in message 0: a content part of type 'image_url' where text is needed",
    ),
    (
        "openai no shared prefix",
        from_openai,
        {"chosen": [U("a"), A()], "rejected": [U("b"), A()]},
        None,
        "prompt differs between chosen and rejected: they share no prefix (message 0 differs); give the shared context "
        "as an explicit 'prompt' column",
    ),
    (
        "openai differ before any action",
        from_openai,
        {"chosen": [U("task"), U("obs 1"), A()], "rejected": [U("task"), U("obs 2"), A()]},
        None,
        "prompt differs between chosen and rejected: they first differ at message 1 ('user' vs 'user'), before any "
        "assistant action",
    ),
    (
        "openai identical",
        from_openai,
        {"chosen": [U("task"), A()], "rejected": [U("task"), A()]},
        None,
        "chosen and rejected are identical conversations",
    ),
    (
        "openai unknown role",
        from_openai,
        {"prompt": [{"role": "human", "content": "x"}], "chosen": [A()], "rejected": [A()]},
        "prompt",
        "unknown role 'human' in message 0 (expected one of system, developer, user, assistant, tool, function)",
    ),
    (
        "openai empty action",
        from_openai,
        {"prompt": [U("q")], "chosen": [A(None)], "rejected": [A()]},
        "chosen",
        "empty action: assistant message 0 has no content and no tool_calls",
    ),
    ("not an object", from_openai, ["chosen", "rejected"], None, "a record must be a JSON object, got list"),
]


@pytest.mark.parametrize("case, converter, bad, side, reason", CONVERTER_CASES, ids=[c[0] for c in CONVERTER_CASES])
def test_converter_errors_name_row_and_reason(case, converter, bad, side, reason):
    good_records = {
        from_eto_pairs: rec.eto_pair(),
        from_sharegpt: rec.llamafactory_pair(),
        from_openai: dict(zip(("chosen", "rejected"), rec.openai_conversations(), strict=True)),
    }
    records = [good_records[converter], bad]
    with pytest.raises(DMPODataError) as err:
        converter(copy.deepcopy(records))
    assert (err.value.row, err.value.side, err.value.reason) == (1, side, reason)
    skipped = converter(copy.deepcopy(records), skip_invalid=True)
    assert len(skipped) == 1 and [s.row for s in skipped.skipped] == [1]


def test_bad_jsonl_line_names_the_row(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good()) + "\n\n" + '{"prompt": [\n')
    with pytest.raises(DMPODataError, match=r"data.jsonl: line 3, column 1: not valid JSON \(Expecting value\)$"):
        read_records(path)


# ------------------------------------------------------------------------------------------------ property test
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["Action: look", "Observation: ok", "<|im_end|>", "<|im_start|>assistant\n", " ", "\n", "é😀"]),
)
ROLES = st.sampled_from(["system", "user", "assistant", "tool", "assistant", "user", "bot", "", None])
CONTENT = st.one_of(
    TEXT,
    TEXT,
    TEXT,
    st.none(),
    st.integers(),
    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": TEXT}), max_size=2),
)
TOOL_CALLS = st.one_of(
    st.none(),
    st.lists(
        st.fixed_dictionaries(
            {
                "type": st.just("function"),
                "function": st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["search", "", "buy"]),
                        "arguments": st.one_of(
                            st.dictionaries(st.sampled_from(["q", "n"]), st.integers(0, 9), max_size=2),
                            st.sampled_from(['{"q": 1}', "{bad"]),
                        ),
                    }
                ),
            }
        ),
        max_size=2,
    ),
)
MESSAGE = st.one_of(
    st.builds(
        lambda role, content, calls: {"role": role, "content": content, **({"tool_calls": calls} if calls else {})},
        ROLES,
        CONTENT,
        TOOL_CALLS,
    ),
    st.sampled_from(["text", 3, None]),
)
CONVERSATION = st.lists(MESSAGE, max_size=5)


@st.composite
def agent_like(draw):
    """Mostly well-formed agent rows (so many reach the tokenizer), with random text and random breakage."""

    def side():
        n = draw(st.integers(1, 3))
        msgs = []
        for t in range(n):
            calls = draw(TOOL_CALLS) if draw(st.booleans()) else None
            msgs.append({"role": "assistant", "content": draw(TEXT), **({"tool_calls": calls} if calls else {})})
            if t < n - 1 or draw(st.booleans()):
                msgs.append({"role": draw(st.sampled_from(["user", "tool"])), "content": draw(TEXT)})
        return msgs

    row = {"prompt": [{"role": "user", "content": draw(TEXT)}], "chosen": side(), "rejected": side()}
    if draw(st.booleans()):
        row["prompt"].insert(0, {"role": "system", "content": draw(TEXT)})
    if draw(st.integers(0, 4)) == 0:  # break one message
        key = draw(st.sampled_from(["prompt", "chosen", "rejected"]))
        row[key][draw(st.integers(0, len(row[key]) - 1))] = draw(MESSAGE)
    return row


ROWS = st.one_of(
    agent_like(),
    agent_like(),
    st.fixed_dictionaries({"chosen": CONVERSATION, "rejected": CONVERSATION}, optional={"prompt": CONVERSATION}),
)


def to_sharegpt(row: dict) -> dict:
    names = {"user": "human", "assistant": "gpt", "tool": "observation", "system": "system"}

    def conv(messages):
        if not isinstance(messages, list):
            return messages
        return [
            {"from": names.get(m.get("role"), m.get("role")), "value": m.get("content")} if isinstance(m, dict) else m
            for m in messages
        ]

    return {key: conv(value) for key, value in row.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=ROWS, max_length=st.one_of(st.none(), st.integers(1, 200)))
def test_random_conversations_only_fail_with_dmpo_errors_and_never_yield_empty_masks(tok, row, max_length):
    candidates = []
    for converter, record in ((from_project, row), (from_openai, row), (from_sharegpt, to_sharegpt(row))):
        try:
            candidates.extend(converter([copy.deepcopy(record)]))
        except DMPODataError:
            pass
    for candidate in candidates:
        try:
            stats = validate_row(tok, candidate, 0, max_length)
        except DMPODataError:
            continue
        assert min(stats.kept) >= 1
        # independently: the row tokenizes with at least one action token per side, and one survives truncation
        # (after the one normalization every entry path applies: JSON-string tool arguments become objects, which the
        # template renders shorter than the quoted string)
        out = tokenize_pair(tok, normalize_pair(candidate))
        for side in ("chosen", "rejected"):
            turn_ids = [NOT_ACTION] * len(out["prompt_ids"]) + out[f"{side}_turn_ids"]
            assert any(t >= 0 for t in turn_ids)
            ids = out["prompt_ids"] + out[f"{side}_ids"]
            _, kept_turn_ids, kept = truncate_trajectory(len(out["prompt_ids"]), ids, turn_ids, max_length)
            assert kept >= 1 and any(t >= 0 for t in kept_turn_ids)
