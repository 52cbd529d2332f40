"""Every chat template TRL 1.16 ships (trl/chat_templates/*.jinja): token-exact action spans or a named refusal.

The trajectory (`dmpo_trl.testing.TABLE_TOOL_TRAJECTORY`): a tool call, its result, a text action, a user
observation, a text action. Templates without a tool role, or that drop tool calls, are also checked on the same
trajectory with the tool call as a text action and its result as a user message (`TABLE_TEXT_TRAJECTORY`).
Expected texts are written from each template's own rendering rules: what the template emits for an assistant
message after its generation prompt, the content, and the end-of-turn token.
"""

import copy

import pytest

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.tokenization import tokenize_conversation
from dmpo_trl.testing import (
    TABLE_PROMPT,
    TABLE_TEXT_TRAJECTORY,
    TABLE_TOOL_TRAJECTORY,
    TABLE_TOOLS,
    TEMPLATE_DIR,
    template_survey,
    template_tokenizer,
)


def group(names, value):
    return dict.fromkeys(names, value)


IM = "<|im_end|>"
# template -> (prefix the template puts before the content inside an action, end of turn) for text actions
TEXT = {
    **group(
        [
            "lfm2",
            "lfm2_training",
            "lfm2_2_5",
            "lfm2_2_5_v2",
            "lfm2_2_5_vl",
            "lfm2_v2",
            "lfm2_v2_training",
            "qwen2_5",
            "qwen2_5_training",
            "qwen2_5_vl",
            "qwen2_5_vl_training",
            "qwen3_5_nothink_training",
            "qwen3_instruct_2507",
            "qwen3_instruct_2507_training",
            "qwen3_vl",
            "qwen3_vl_training",
        ],
        ("", IM),
    ),
    **group(["qwen3_5_think_training", "qwen3_6_training", "qwen3_8", "qwen3_8_training"], ("\n</think>\n\n", IM)),
    "qwen3_training": ("<think>\n\n</think>\n\n", IM),
    **group([f"nemotron_3_{v}_training" for v in ("5_lightning", "nano", "super", "ultra")], ("<think></think>", IM)),
    **group(["cohere", "cohere_training"], ("", "<|END_OF_TURN_TOKEN|>")),
    **group(["cohere2", "cohere2_training"], ("", "<|END_RESPONSE|><|END_OF_TURN_TOKEN|>")),
    **group(["deepseek_r1_distill_training", "deepseekv3_training"], ("", "<｜end▁of▁sentence｜>")),
    **group(
        ["diffusion_gemma", "diffusion_gemma_training", "gemma4", "gemma4_v2", "gemma4_v3", "gemma4_v4", "gemma4_v5"],
        ("", "<turn|>"),
    ),
    **group(["gemma", "gemma_training", "gemma3", "gemma3_training"], ("", "<end_of_turn>")),
    **group(["glm4moe", "glm4moe_training"], ("\n<think></think>\n", "<|user|>")),  # the next role token ends it
    "gptoss_training": ("<|channel|>final<|message|>", "<|end|>"),
    **group(["llama3", "llama3_1", "llama3_2", "llama3_training"], ("", "<|eot_id|>")),
    **group(["muse_glimmer", "muse_glimmer_training"], (" to=user<|message|>", "<|eot|>")),
    **group(["phi3_training", "phi3_5_training"], ("", "<|end|>")),
}
# The last action of a conversation, where the template ends it differently
LAST_EOT = {
    "gptoss_training": "<|return|>",  # harmony: the final message ends with <|return|>
    "phi3_training": "<|end|>\n<|endoftext|>",  # the template appends EOS after the last message
    "phi3_5_training": "<|end|>\n<|endoftext|>",
}
PREFIX_BROKEN = "breaks the prefix property"
TEXT_REFUSED = {
    **group(
        [
            "deepseek_r1_distill",
            "deepseekv3",
            "gptoss",
            "phi3",
            "phi3_5",
            "qwen3",
            "qwen3_5_nothink",
            "qwen3_5_think",
            "qwen3_6",
            *(f"nemotron_3_{v}" for v in ("5_lightning", "nano", "super", "ultra")),
        ],
        PREFIX_BROKEN,
    ),
    **group(["idefics3", "idefics3_training", "smolvlm", "smolvlm_training"], "does not render the content"),
    **group(["llava_next", "llava_next_training"], "has no attribute 'text'"),  # vision: content must be parts
}
# template -> end of the tool-call action, for templates that render the tool trajectory
TOOL_EOT = {
    **group(
        [
            "qwen2_5",
            "qwen2_5_training",
            "qwen3_5_nothink_training",
            "qwen3_5_think_training",
            "qwen3_6_training",
            "qwen3_8",
            "qwen3_8_training",
            "qwen3_instruct_2507",
            "qwen3_instruct_2507_training",
            "qwen3_training",
            "qwen3_vl",
            "qwen3_vl_training",
            "lfm2_2_5",
            "lfm2_2_5_v2",
            "lfm2_2_5_vl",
            "lfm2_v2",
            "lfm2_v2_training",
            *(f"nemotron_3_{v}_training" for v in ("5_lightning", "nano", "super", "ultra")),
        ],
        IM,
    ),
    **group(["glm4moe", "glm4moe_training"], "<|observation|>"),
    **group(["gemma4", "gemma4_v3", "gemma4_v4", "gemma4_v5", "diffusion_gemma"], "<|tool_response>"),
    "gemma4_v2": "<turn|>",
    "diffusion_gemma_training": "<tool_call|>",
    "gptoss_training": "<|call|>",
    **group(["llama3_1", "llama3_2"], "<|eot_id|>"),
    "deepseekv3_training": "<｜end▁of▁sentence｜>",
    **group(["muse_glimmer", "muse_glimmer_training"], "<|eot|>"),
}
TOOL_REFUSED = {
    **group(
        [
            "cohere",
            "cohere_training",
            "cohere2",
            "cohere2_training",
            "gemma",
            "gemma_training",
            "gemma3",
            "gemma3_training",
        ],
        "Conversation roles must alternate",  # no tool role
    ),
    **group(
        [
            "deepseek_r1_distill_training",
            "lfm2",
            "lfm2_training",
            "llama3",
            "llama3_training",
            "phi3_training",
            "phi3_5_training",
            "qwen2_5_vl",
            "qwen2_5_vl_training",
        ],
        "is empty",  # the template drops tool_calls
    ),
    "deepseekv3": "can only concatenate str",  # tool-call arguments must be a JSON string
    **group(["idefics3", "idefics3_training", "smolvlm", "smolvlm_training"], "has no element 0"),
}
ALL = sorted(p.name.removesuffix(".jinja") for p in TEMPLATE_DIR.glob("*.jinja"))


def test_every_shipped_template_is_covered():
    for name in ALL:
        assert (name in TEXT) != (name in TEXT_REFUSED), name
        text_ok = name in TEXT
        assert (name in TOOL_EOT) + (name in TOOL_REFUSED) + (not text_ok and name not in TOOL_REFUSED) == 1, name
    assert len(ALL) >= 70


@pytest.mark.parametrize("name", ALL)
def test_template_actions_are_token_exact_or_refused_by_name(name):
    survey = template_survey(f"{name}.jinja")
    assert survey["path"] == (
        "markers"
        if "generation -%}" in (src := (TEMPLATE_DIR / f"{name}.jinja").read_text()) or "generation %}" in src
        else "prefix"
    )
    texts = [m["content"] for m in TABLE_TEXT_TRAJECTORY if m["role"] == "assistant"]
    if name in TEXT:
        pre, eot = TEXT[name]
        last = LAST_EOT.get(name, eot)
        assert survey["text"] == [pre + texts[0] + eot, pre + texts[1] + eot, pre + texts[2] + last]
    else:
        assert isinstance(survey["text"], str) and TEXT_REFUSED[name] in survey["text"]
    if name in TOOL_EOT:
        tool_action, second, third = survey["tool"]
        assert "search" in tool_action and "blue shoes" in tool_action and tool_action.endswith(TOOL_EOT[name])
        assert third == pre + texts[2] + last
        header = "<|turn>model\n" if name == "diffusion_gemma" else ""  # after a tool result its prompt is empty
        assert second == header + pre + texts[1] + eot
    elif name in TOOL_REFUSED:
        assert isinstance(survey["tool"], str) and TOOL_REFUSED[name] in survey["tool"]
    else:
        assert isinstance(survey["tool"], str)


BOTH_PATHS = [n.removesuffix("_training") for n in ALL if n.endswith("_training") and n in TEXT and n[:-9] in TEXT]


@pytest.mark.parametrize("name", BOTH_PATHS)
def test_marker_path_and_prefix_path_agree_where_both_work(name):
    """Same actions, token for token, from the tokenizer's assistant mask and from the prefix rendering."""
    prefix, markers = template_survey(f"{name}.jinja"), template_survey(f"{name}_training.jinja")
    assert prefix["path"] == "prefix" and markers["path"] == "markers"
    assert prefix["text"] == markers["text"]


def test_generation_prompt_inside_the_block_is_not_action():
    """qwen2_5_training opens the block before the generation prompt's ``\\n``: the ``\\n`` stays context."""
    tok = template_tokenizer("qwen2_5_training.jinja")
    tc = tokenize_conversation(tok, TABLE_PROMPT, TABLE_TEXT_TRAJECTORY)
    first = tc.turn_ids.index(0)
    assert tok.decode(tc.input_ids[:first]).endswith("<|im_start|>assistant\n")
    mask = tok.apply_chat_template(
        TABLE_PROMPT + TABLE_TEXT_TRAJECTORY, return_dict=True, return_assistant_tokens_mask=True
    )["assistant_masks"]
    assert mask[first - 1] == 1  # the tokenizer's mask starts one token earlier


def test_glm_last_action_gets_the_template_end_token():
    tok = template_tokenizer("glm4moe.jinja")
    tc = tokenize_conversation(tok, TABLE_PROMPT, TABLE_TEXT_TRAJECTORY)
    rendered = tok.apply_chat_template(TABLE_PROMPT + TABLE_TEXT_TRAJECTORY, tokenize=False)
    assert not rendered.endswith("<|user|>")  # the template itself puts nothing after the last message
    assert tc.input_ids[-1] == tok.convert_tokens_to_ids("<|user|>") and tc.turn_ids[-1] == 2


def test_refusals_name_both_remedies():
    tok = template_tokenizer("qwen3.jinja")
    with pytest.raises(DMPODataError) as err:
        tokenize_conversation(tok, TABLE_PROMPT, TABLE_TOOL_TRAJECTORY, tools=TABLE_TOOLS, row=3, side="chosen")
    message = str(err.value)
    assert message.startswith("row 3, chosen: the chat template breaks the prefix property")
    assert "{% generation %}" in message and "_training.jinja" in message and "chat_template_path" in message


def _edited(template_file, old, new):
    tok = copy.deepcopy(template_tokenizer(template_file))  # the shared one stays as it is
    assert old in tok.chat_template
    tok.chat_template = tok.chat_template.replace(old, new)
    return tok


#: Templates edited to render each assistant message's content (or a tool call's arguments) twice.
DUPLICATING = {
    "markers": (
        "qwen2_5_training.jinja",
        "{{- '\\n' + message.content + '<|im_end|>\\n' }}",
        "{{- '\\n' + message.content + '\\n' + message.content + '<|im_end|>\\n' }}",
    ),
    "prefix": (
        "qwen2_5.jinja",
        "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}",
        "{{- '<|im_start|>' + message.role + '\\n' + message.content + ('\\n' + message.content if message.role == "
        "'assistant' else '') + '<|im_end|>' + '\\n' }}",
    ),
}


@pytest.mark.parametrize("path", sorted(DUPLICATING))
def test_a_template_that_renders_an_action_twice_is_refused(path):
    tok = _edited(*DUPLICATING[path])
    with pytest.raises(DMPODataError) as err:
        tokenize_conversation(tok, TABLE_PROMPT, TABLE_TEXT_TRAJECTORY, row=4, side="chosen")
    message = str(err.value)
    assert message.startswith("row 4, chosen: the chat template renders the content of action 0")
    assert "more than once" in message and "_training.jinja" in message  # the remedy


def test_a_template_that_renders_a_tool_call_twice_is_refused():
    tojson = "{{- tool_call.arguments | tojson }}"
    tok = _edited("qwen2_5_training.jinja", tojson, tojson + tojson)
    with pytest.raises(DMPODataError, match="renders the tool call arguments of action 0 more than once"):
        tokenize_conversation(tok, TABLE_PROMPT, TABLE_TOOL_TRAJECTORY, tools=TABLE_TOOLS)
    tokenize_conversation(
        template_tokenizer("qwen2_5_training.jinja"), TABLE_PROMPT, TABLE_TOOL_TRAJECTORY, tools=TABLE_TOOLS
    )


@pytest.mark.parametrize("template", ["qwen2_5.jinja", "qwen2_5_training.jinja", "llama3_1.jinja", "gemma3.jinja"])
def test_short_actions_found_in_the_markup_are_not_duplicates(template):
    """One-letter moves (``n``, ``e``) and ``end`` occur inside ``<|im_end|>`` / ``<end_of_turn>``: not twice."""
    moves = [
        {"role": "assistant", "content": a} if i % 2 == 0 else {"role": "user", "content": "ok"}
        for i, a in enumerate(["n", "x", "e", "x", "end", "x", "turn"])
    ]
    tc = tokenize_conversation(template_tokenizer(template), TABLE_PROMPT[1:], moves)
    assert max(tc.turn_ids) == 3
