"""The linear-time action locator: the same token ids and turn ids as rendering every prefix, on every template of
the table, with tools, random conversations and SmolLM2's own tokenizer; linear render cost; exact fallback."""

import copy
import random

import pytest

import dmpo_trl.core.rows.tokenization as tokenization
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.templates import has_generation_markers
from dmpo_trl.core.rows.tokenization import tokenize_conversation
from dmpo_trl.testing import (
    TABLE_PROMPT,
    TABLE_TEXT_TRAJECTORY,
    TABLE_TOOL_TRAJECTORY,
    TABLE_TOOLS,
    TEMPLATE_DIR,
    make_tokenizer,
    template_tokenizer,
)
from tests.core.rows.test_tokenization import TOOL_COMPLETION, TOOL_PROMPT, TOOLS


WORDS = "look around open door north take coin key box é ü 中文 {json} <b> \\n ... Action: Thought:".split()


def conversation(rng, n_actions, tool=False):
    prompt = [{"role": "system", "content": "You are an agent."}] if rng.random() < 0.7 else []
    prompt.append({"role": "user", "content": "Task: " + " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))})
    completion = []
    for t in range(n_actions):
        content = "\n".join(" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(rng.randint(1, 3)))
        completion.append({"role": "assistant", "content": f"Thought: {content}"})
        if t < n_actions - 1:
            for _ in range(rng.randint(1, 2) if tool else 1):
                completion.append({"role": "user", "content": "Observation: " + " ".join(rng.choices(WORDS, k=8))})
    return prompt, completion


def by_prefix_renders(monkeypatch, tok, prompt, completion, **kw):
    with monkeypatch.context() as m:
        m.setattr(tokenization, "window_span", lambda *a, **k: None)
        return tokenize_conversation(tok, prompt, completion, **kw)


def count_prefix_spans(monkeypatch):
    calls = []
    original = tokenization.prefix_span

    def spy(*a, **k):
        calls.append(a[2])
        return original(*a, **k)

    monkeypatch.setattr(tokenization, "prefix_span", spy)
    return calls


@pytest.mark.parametrize("family", ["qwen2_5", "llama3_1", "gemma3"])  # qwen3's test template has markers
@pytest.mark.parametrize("seed", range(6))
def test_window_locator_equals_prefix_renders(monkeypatch, family, seed):
    tok = make_tokenizer(family)
    rng = random.Random(seed)
    prompt, completion = conversation(rng, rng.randint(2, 9), tool=family != "gemma3")
    if family == "gemma3":  # gemma's template needs alternating user / assistant turns
        prompt = [m for m in prompt if m["role"] != "system"]
    expected = by_prefix_renders(monkeypatch, tok, prompt, completion)
    prefix_calls = count_prefix_spans(monkeypatch)
    got = tokenize_conversation(tok, prompt, completion)
    assert got == expected
    assert prefix_calls == [len(prompt)]  # only the first action rendered its prefixes; the others were located
    assert got.num_turns == sum(m["role"] == "assistant" for m in completion)


# Every template of TRL's table that takes the prefix-rendering path (no generation markers)
PREFIX_PATH_TEMPLATES = sorted(
    p.name for p in TEMPLATE_DIR.glob("*.jinja") if not has_generation_markers(p.read_text(encoding="utf-8"))
)


def outcome(fn):
    try:
        return fn()
    except DMPODataError as err:
        return f"error: {err.reason}"


@pytest.mark.parametrize("template_file", PREFIX_PATH_TEMPLATES)
def test_window_locator_equals_prefix_renders_on_every_prefix_path_template(monkeypatch, template_file):
    """The table's trajectories (tools and text) and a longer random one, with and without a system message: the
    locator gives what prefix renders give, token ids and turn ids, or the same error."""
    tok = template_tokenizer(template_file)
    prompt, completion = conversation(random.Random(0), 7)
    cases = [
        (TABLE_PROMPT, TABLE_TEXT_TRAJECTORY, None),
        (TABLE_PROMPT, TABLE_TOOL_TRAJECTORY, TABLE_TOOLS),
        ([m for m in prompt if m["role"] != "system"], completion, None),
    ]
    for case_prompt, case_completion, tools in cases:
        for p in (case_prompt, [m for m in case_prompt if m["role"] != "system"]):
            expected = outcome(lambda: by_prefix_renders(monkeypatch, tok, p, case_completion, tools=tools))  # noqa: B023
            got = outcome(lambda: tokenize_conversation(tok, p, case_completion, tools=tools))  # noqa: B023
            assert got == expected, (template_file, len(p), tools is not None)
    assert len(PREFIX_PATH_TEMPLATES) >= 20


def test_most_prefix_path_templates_tokenize_the_long_trajectory(monkeypatch):
    """The equality above is not vacuous: most prefix-path templates tokenize a 7-action trajectory, and the
    locator finds every action after the first without prefix renders on them."""
    prompt, completion = conversation(random.Random(0), 7)
    prompt = [m for m in prompt if m["role"] != "system"]
    located = 0
    for template_file in PREFIX_PATH_TEMPLATES:
        tok = template_tokenizer(template_file)
        calls = count_prefix_spans(monkeypatch)
        if not isinstance(outcome(lambda: tokenize_conversation(tok, prompt, completion)), str):  # noqa: B023
            located += calls == [len(prompt)]
    assert located >= 20, located  # 23 of the 38 templates (the others refuse this trajectory either way)


@pytest.mark.parametrize("family", ["qwen2_5", "llama3_1"])
def test_window_locator_with_tool_calls(monkeypatch, family):
    tok = make_tokenizer(family)
    completion = TOOL_COMPLETION[:2] + TOOL_COMPLETION + [{"role": "tool", "name": "search", "content": "ok"}]
    completion += [{"role": "assistant", "content": "Done."}]
    expected = by_prefix_renders(monkeypatch, tok, TOOL_PROMPT, completion, tools=TOOLS)
    assert tokenize_conversation(tok, TOOL_PROMPT, completion, tools=TOOLS) == expected
    assert expected.num_turns == 4


def test_smollm2_tokenizer_long_conversation(monkeypatch):
    from transformers import AutoTokenizer

    from dmpo_trl.models import gguf_source

    gguf = gguf_source()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prompt, completion = conversation(random.Random(7), 40)
    prefix_calls = count_prefix_spans(monkeypatch)
    got = tokenize_conversation(tok, prompt, completion)
    assert len(prefix_calls) == 1
    assert got == by_prefix_renders(monkeypatch, tok, prompt, completion)


def test_render_cost_is_linear_in_the_number_of_actions(monkeypatch):
    tok = make_tokenizer("qwen2_5")
    rendered = []
    original = tokenization._render

    def spy(tokenizer, messages, *a, **k):
        rendered.append(len(messages))
        return original(tokenizer, messages, *a, **k)

    monkeypatch.setattr(tokenization, "_render", spy)
    costs = {}
    for n in (10, 40):
        rendered.clear()
        prompt, completion = conversation(random.Random(1), n)
        tokenize_conversation(tok, prompt, completion)
        costs[n] = (len(rendered), sum(rendered))
    assert costs[10][0] == 2 * 10 + 2 and costs[40][0] == 2 * 40 + 2  # whole, first prefixes, prompt, 2 per action
    assert costs[40][1] < 4.5 * costs[10][1]  # messages rendered grow linearly (prefix renders: ~16x)


def test_template_that_numbers_turns_falls_back_to_prefix_renders(monkeypatch):
    """A template whose turns depend on their position: windows cannot match, every action renders its prefixes."""
    numbered = copy.deepcopy(make_tokenizer("qwen2_5"))
    numbered.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ loop.index }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {{ messages|length + 1 }}\n{% endif %}"
    )
    prompt, completion = conversation(random.Random(3), 5)
    expected = by_prefix_renders(monkeypatch, numbered, prompt, completion)
    prefix_calls = count_prefix_spans(monkeypatch)
    got = tokenize_conversation(numbered, prompt, completion)
    # action 1's window is the real prefix (it starts at action 0, right after the prompt), so it matches
    assert got == expected and len(prefix_calls) == 4
    assert [numbered.decode([i for i, t in zip(got.input_ids, got.turn_ids, strict=True) if t == 4])] == [
        completion[-1]["content"] + "<|im_end|>"
    ]
