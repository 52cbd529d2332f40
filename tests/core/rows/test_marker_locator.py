"""The marker path in linear time: the same token ids, action masks and turn ids (or the same error) as the quadratic
method it replaces (`reference_marker_action_spans` below: two prefix renders per action and two tokenizations), on
every template of TRL's table that has ``{% generation %}`` markers, with tool calls and text; linear render cost,
one BPE pass, exact fallback where a window does not match."""

import copy
import random

import pytest

import dmpo_trl.core.rows.templates as templates
import dmpo_trl.core.rows.tokenization as tokenization
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.templates import (
    EMPTY_ACTION,
    TEMPLATE_REMEDY,
    check_action_content,
    has_generation_markers,
    template_action_end,
)
from dmpo_trl.core.rows.tokenization import tokenize_conversation
from dmpo_trl.testing import (
    TABLE_PROMPT,
    TABLE_TEXT_TRAJECTORY,
    TABLE_TOOL_TRAJECTORY,
    TABLE_TOOLS,
    TEMPLATE_DIR,
    template_tokenizer,
)
from tests.core.rows.test_tokenization import TOOL_COMPLETION, TOOL_PROMPT, TOOLS
from tests.core.rows.test_tokenization_locator import conversation


# ---- the method before (issue 10), kept verbatim as the reference -------------------------------------------------


def _runs(mask):
    runs, start = [], None
    for k, m in enumerate([*mask, 0]):
        if m and start is None:
            start = k
        elif not m and start is not None:
            runs.append((start, k))
            start = None
    return runs


def _ends_with(text, end, context, window=32):
    tail = context[-window:] if window < len(context) else context
    return text[:end].endswith(tail)


def _action_start(full_text, offsets, k0, k1, with_prompt, without):
    start, end = offsets[k0][0], offsets[k1 - 1][1]
    for m in range(min(len(with_prompt), end - start), 0, -1):
        if with_prompt.endswith(full_text[start : start + m]) and _ends_with(full_text, start, with_prompt[:-m]):
            k = k0
            while k < k1 and offsets[k][1] <= start + m:
                k += 1
            return k if k == k1 or offsets[k][0] >= start + m else None
    if with_prompt.startswith(without) and _ends_with(full_text, start, without):
        prompt = with_prompt[len(without) :]
        k = k0
        while k < k1 and prompt.startswith(full_text[start : offsets[k][1]]):
            k += 1
        return k
    return k0


def reference_marker_action_spans(
    tokenizer, messages, action_positions, *, render, template_kwargs, special, row, side
):
    """`dmpo_trl.core.rows.templates.marker_action_spans` before it was made linear (commit 7396428)."""
    full_text = render(messages, False)
    try:
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **template_kwargs
        )
    except Exception as err:
        raise DMPODataError(
            f"the chat template rejected the conversation ({type(err).__name__}: {err})", row, side
        ) from err
    input_ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    encoding = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoding["input_ids"]) != input_ids:
        raise DMPODataError(
            "the tokenizer's assistant mask does not come with the same tokens as the rendered conversation", row, side
        )
    offsets = encoding["offset_mapping"]
    runs = _runs(mask)
    num_prompt_assistant = sum(1 for m in messages[: action_positions[0]] if m.get("role") == "assistant")
    runs = runs[num_prompt_assistant:]
    if len(runs) != len(action_positions):
        raise DMPODataError(
            f"the chat template's generation markers mark {len(runs)} assistant span(s) in the completion for "
            f"{len(action_positions)} assistant message(s) (a message rendered as nothing, or a message split into "
            f"several generation blocks); {TEMPLATE_REMEDY}",
            row,
            side,
        )
    spans = []
    for t, ((k0, k1), j) in enumerate(zip(runs, action_positions, strict=True)):
        first = _action_start(full_text, offsets, k0, k1, render(messages[:j], True), render(messages[:j], False))
        if first is None:
            raise DMPODataError(
                f"cannot align tokens with the chat template: a token spans the end of the generation prompt of "
                f"action {t}, so the action cannot be separated exactly from it",
                row,
                side,
            )
        k0 = first
        eot = next((k for k in range(k1 - 1, k0 - 1, -1) if input_ids[k] in special), None)
        if eot is None:
            eot = template_action_end(
                tokenizer,
                input_ids,
                k1,
                special,
                lambda j=j: templates._continued(render, messages[: j + 1], full_text),
            )
        if eot is None:
            raise DMPODataError(
                f"action {t} has no end-of-turn token: the chat template's generation block for it holds no special "
                f"token and none follows it, so the model could not learn to stop; {TEMPLATE_REMEDY}",
                row,
                side,
            )
        if eot <= k0:
            raise DMPODataError(EMPTY_ACTION.format(t=t), row, side)
        end_char = offsets[eot][1] if eot < len(offsets) else len(full_text)
        check_action_content(full_text[offsets[k0][0] : end_char], messages[j], t, row, side)
        spans.append((k0, eot + 1))
    return input_ids, spans


# ---- the comparison -----------------------------------------------------------------------------------------------

MARKER_PATH_TEMPLATES = sorted(
    p.name for p in TEMPLATE_DIR.glob("*.jinja") if has_generation_markers(p.read_text(encoding="utf-8"))
)
LONG_TOOL = [
    *TOOL_COMPLETION[:2],
    *TOOL_COMPLETION,
    {"role": "tool", "name": "search", "content": "ok"},
    {"role": "assistant", "content": "Done."},
]


def outcome(fn):
    try:
        return fn()
    except DMPODataError as err:
        return f"error: {err.reason}"


def by_reference(monkeypatch, tok, prompt, completion, **kw):
    with monkeypatch.context() as m:
        m.setattr(tokenization, "marker_action_spans", reference_marker_action_spans)
        return tokenize_conversation(tok, prompt, completion, **kw)


def cases():
    """(prompt, completion, tools): the table's trajectories, two random 7- and 9-action ones (observations of one or
    two user messages), four tool calls and text actions; each with and without the system message."""
    out = [(TABLE_PROMPT, TABLE_TEXT_TRAJECTORY, None), (TABLE_PROMPT, TABLE_TOOL_TRAJECTORY, TABLE_TOOLS)]
    out += [(*conversation(random.Random(seed), n, tool=True), None) for seed, n in ((0, 7), (1, 9))]
    out.append((TOOL_PROMPT, LONG_TOOL, TOOLS))
    return [(p, c, tools) for prompt, c, tools in out for p in (prompt, [m for m in prompt if m["role"] != "system"])]


def count_prefix_prompts(monkeypatch):
    calls = []
    original = templates._prefix_prompt

    def spy(render, messages, j, full_text):
        calls.append(j)
        return original(render, messages, j, full_text)

    monkeypatch.setattr(templates, "_prefix_prompt", spy)
    return calls


@pytest.mark.parametrize("template_file", MARKER_PATH_TEMPLATES)
def test_marker_path_equals_the_quadratic_method_on_every_marker_template(monkeypatch, template_file):
    tok = template_tokenizer(template_file)
    for prompt, completion, tools in cases():
        expected = outcome(lambda: by_reference(monkeypatch, tok, prompt, completion, tools=tools))  # noqa: B023
        got = outcome(lambda: tokenize_conversation(tok, prompt, completion, tools=tools))  # noqa: B023
        assert got == expected, (template_file, len(prompt), tools is not None)


def test_the_comparison_is_not_vacuous(monkeypatch):
    """Most marker templates tokenize the 9-action trajectory and the tool one, and the windows locate every action
    after the first without prefix renders (Phi-3's, whose prefixes end with EOS, renders them every time)."""
    p9, c9 = conversation(random.Random(1), 9, tool=True)
    located = {"text": 0, "tool": 0}
    for template_file in MARKER_PATH_TEMPLATES:
        tok = template_tokenizer(template_file)
        for kind, (prompt, completion, tools) in {
            "text": ([m for m in p9 if m["role"] != "system"], c9, None),
            "tool": (TOOL_PROMPT, LONG_TOOL, TOOLS),
        }.items():
            calls = count_prefix_prompts(monkeypatch)
            if not isinstance(outcome(lambda: tokenize_conversation(tok, prompt, completion, tools=tools)), str):  # noqa: B023
                located[kind] += len(calls) == 1
    assert located["text"] >= 25 and located["tool"] >= 18, located  # of 34; the others refuse or (Phi-3) fall back


def test_render_cost_is_linear_and_one_bpe_pass(monkeypatch):
    tok = template_tokenizer("qwen2_5_training.jinja")
    rendered, bpe = [], []
    original_render, original_call = tokenization._render, type(tok).__call__

    def spy_render(tokenizer, messages, *a, **k):
        rendered.append(len(messages))
        return original_render(tokenizer, messages, *a, **k)

    def spy_call(self, *a, **k):
        bpe.append(len(a[0]) if a else 0)
        return original_call(self, *a, **k)

    monkeypatch.setattr(tokenization, "_render", spy_render)
    monkeypatch.setattr(type(tok), "__call__", spy_call)
    costs = {}
    for n in (10, 40):
        rendered.clear(), bpe.clear()
        prompt, completion = conversation(random.Random(1), n)
        tokenize_conversation(tok, prompt, completion)
        costs[n] = (len(rendered), sum(rendered))
        assert len(bpe) == 1  # inside apply_chat_template: the assistant mask and the offsets of one pass
    assert costs[10][0] == 1 + 2 * 10 and costs[40][0] == 1 + 2 * 40  # the text, then 2 per action
    assert costs[40][1] < 4.5 * costs[10][1]  # messages rendered grow linearly (prefix renders: ~16x)


def test_window_that_does_not_match_falls_back_to_prefix_renders(monkeypatch):
    """A marker template that numbers the turns: a window numbers its messages from 1, so it does not match the whole
    rendering, and those actions take their generation prompt from the prefix renders."""
    numbered = copy.deepcopy(template_tokenizer("qwen2_5_training.jinja"))
    numbered.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ loop.index }}\n{% if m['role'] == 'assistant' %}"
        "{% generation %}{{ m['content'] }}<|im_end|>{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>"
        "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {{ messages|length + 1 }}\n"
        "{% endif %}"
    )
    prompt, completion = conversation(random.Random(3), 5)
    expected = by_reference(monkeypatch, numbered, prompt, completion)
    calls = count_prefix_prompts(monkeypatch)
    got = tokenize_conversation(numbered, prompt, completion)
    # action 1's window is the real prefix (it starts at action 0, right after the prompt), so it matches
    assert got == expected and len(calls) == 4
    last = [i for i, t in zip(got.input_ids, got.turn_ids, strict=True) if t == 4]
    assert numbered.decode(last) == completion[-1]["content"] + "<|im_end|>"


def test_generation_prompt_overlap_found_without_quadratic_search():
    """`_action_start` (a): the longest tail of the generation prompt that opens the block, found by scanning only
    the positions of the block's first character; a token that straddles its end is refused."""
    full_text = "ctx ctx <|a|>x\nhello"
    offsets = [(0, 8), (8, 13), (13, 14), (14, 15), (15, 20)]  # "ctx ctx ", "<|a|>", "x", "\n", "hello"
    with_prompt = "ctx ctx <|a|>x"  # the block [1, 5) opens with the generation prompt's "<|a|>x"
    prompt = templates._GenerationPrompt(with_prompt, len(with_prompt), "", None, "")
    assert templates._action_start(full_text, offsets, 1, 5, prompt) == 3
    assert _action_start(full_text, offsets, 1, 5, with_prompt, "") == 3
    other = "abc abc <|a|>x\nhello"  # the same block after other context: the overlap does not count
    assert (
        templates._action_start(other, offsets, 1, 5, prompt)
        == 1
        == _action_start(other, offsets, 1, 5, with_prompt, "")
    )
    split = templates._GenerationPrompt("ctx ctx <|a", 11, "", None, "")  # ends inside the token "<|a|>"
    assert templates._action_start(full_text, offsets, 1, 5, split) is None
    assert _action_start(full_text, offsets, 1, 5, "ctx ctx <|a", "") is None
    window = templates._GenerationPrompt("abcdef", 3, "XYZ", None, "")  # with_prompt "abc" + "XYZ", never built
    assert len(window) == 6 and window.tail(2) == "YZ" and window.tail(5) == "bcXYZ" and window.tail(6) == "abcXYZ"
