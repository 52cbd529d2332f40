"""Offline helpers for tests, benchmarks and docs: tiny tokenizers with real chat templates, tiny models, small multi-turn datasets.

Nothing here downloads anything: tokenizers are byte-level BPEs trained in code on a small corpus, with the special
tokens of each template family; chat templates are the real ones TRL ships in `trl/chat_templates/`.
"""

from __future__ import annotations

import functools
import os
import random
import re
from pathlib import Path

import torch

from .core.errors import DMPODataError
from .core.rows.templates import has_generation_markers
from .core.rows.tokenization import tokenize_conversation


TEMPLATE_DIR = Path(__import__("trl").__file__).parent / "chat_templates"

# family -> (template file, special tokens, eos, bos)
FAMILIES = {
    "qwen2_5": ("qwen2_5.jinja", ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], "<|im_end|>", None),
    "qwen3": ("qwen3_training.jinja", ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], "<|im_end|>", None),
    "llama3_1": (
        "llama3_1.jinja",
        [
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
        ],
        "<|eot_id|>",
        "<|begin_of_text|>",
    ),
    "gemma3": ("gemma3.jinja", ["<bos>", "<start_of_turn>", "<end_of_turn>", "<eos>"], "<end_of_turn>", "<bos>"),
    "phi3": ("phi3.jinja", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"], "<|end|>", None),
    "deepseekv3": (
        "deepseekv3.jinja",
        [
            "<｜begin▁of▁sentence｜>",
            "<｜User｜>",
            "<｜Assistant｜>",
            "<｜end▁of▁sentence｜>",
            "<｜tool▁calls▁begin｜>",
            "<｜tool▁calls▁end｜>",
            "<｜tool▁call▁begin｜>",
            "<｜tool▁call▁end｜>",
            "<｜tool▁outputs▁begin｜>",
            "<｜tool▁outputs▁end｜>",
            "<｜tool▁output▁begin｜>",
            "<｜tool▁output▁end｜>",
            "<｜tool▁sep｜>",
        ],
        "<｜end▁of▁sentence｜>",
        "<｜begin▁of▁sentence｜>",
    ),
}

# Non-special added tokens some templates emit (tool-call markup the model generates as ordinary text tokens)
EXTRA_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

CORPUS = [
    "Thought: I should look around the room first.\nAction: look around",
    "Observation: You are in the kitchen. You see a fridge, a counter and a door to the north.",
    "Thought: The coin may be in the next room.\nAction: open door to north",
    "Observation: The door is now open. Action: move north. You see a coin.",
    "Action: take coin. Observation: You take the coin. Your score is 1.",
    "You are a helpful agent. Solve the task step by step. Task: find the coin and take it.",
    '{"name": "search", "arguments": {"query": "blue shoes", "page": 1}} tool result: 3 items found',
    "system user assistant tool model ipython Environment: Cutting Knowledge Date Today",
]


def _bpe(specials: list[str]):
    """A byte-level BPE (vocab ~500) trained in code on `CORPUS`, with `specials` first in its vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@functools.cache
def make_tokenizer(family: str = "qwen2_5"):
    """A fast byte-level BPE tokenizer (vocab ~500) with the special tokens and the real chat template of `family`."""
    from transformers import PreTrainedTokenizerFast

    template_file, specials, eos, bos = FAMILIES[family]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(specials), eos_token=eos, bos_token=bos, pad_token=specials[-1]
    )
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in (eos, bos)]})
    fast.add_tokens(EXTRA_TOKENS)
    fast.chat_template = (TEMPLATE_DIR / template_file).read_text()
    return fast


#: Special-token spellings of the templates in `trl/chat_templates/` (ChatML, Llama, Gemma, DeepSeek, Cohere, ...).
TEMPLATE_TOKEN_RE = re.compile(
    r"<\|[^|<>\s]+\|>|<｜[^｜]+｜>|<\|[a-z_\"]+>|<[a-z_]+\|>|<[A-Z_]{3,}>|\[gMASK\]|<sop>|</?think>|</?tool_call>"
    r"|</?tool_response>|<start_of_turn>|<end_of_turn>|<end_of_utterance>|<bos>|<eos>|</?s>"
)
#: End-of-turn tokens, in the order `template_tokenizer` prefers one as EOS.
EOS_CANDIDATES = (
    "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>", "<|return|>",
    "<|end|>", "<turn|>", "<|eot|>", "<end_of_utterance>", "<|endoftext|>", "</s>", "<eos>",
)  # fmt: skip


#: Templates whose EOS is not their end-of-turn token (Phi-3 appends EOS after the last message; GLM's is not in it).
EOS_OVERRIDES = {"phi3": "<|endoftext|>", "phi3_5": "<|endoftext|>", "glm4moe": "<|endoftext|>"}


@functools.cache
def template_tokenizer(template_file: str):
    """A tiny BPE (as `make_tokenizer`) with the real chat template `trl/chat_templates/<template_file>`.

    Every special-token spelling the template uses (`TEMPLATE_TOKEN_RE`) is added; as in the real tokenizers, the
    reasoning and tool-call tags (`EXTRA_TOKENS`) are plain added tokens, the rest special. EOS is the template's
    end-of-turn token (`EOS_CANDIDATES`), BOS Llama's ``<|begin_of_text|>`` when the template reads ``bos_token``.
    """
    from transformers import PreTrainedTokenizerFast

    template = (TEMPLATE_DIR / template_file).read_text()
    found = sorted(set(TEMPLATE_TOKEN_RE.findall(template)))
    eos = EOS_OVERRIDES.get(template_file.split("_training")[0].removesuffix(".jinja"))
    eos = eos or next((t for t in EOS_CANDIDATES if t in found), "<|endoftext|>")
    specials = [t for t in found if t not in EXTRA_TOKENS]
    fast = PreTrainedTokenizerFast(tokenizer_object=_bpe([]))
    fast.add_special_tokens({"additional_special_tokens": specials + ([eos] if eos not in specials else [])})
    fast.add_tokens([t for t in found if t in EXTRA_TOKENS])
    fast.eos_token = fast.pad_token = eos
    if "bos_token" in template:
        fast.bos_token = "<|begin_of_text|>" if "<|begin_of_text|>" in found else "<bos>"
    fast.chat_template = template
    return fast


def tiny_model(tokenizer, seed: int = 0, **overrides):
    """A 2-layer Llama with hidden size 16 and the tokenizer's vocabulary, random init from `seed`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**cfg)).float()


def save_tiny_model(path: str | os.PathLike, tokenizer, seed: int = 0) -> str:
    model = tiny_model(tokenizer, seed)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return str(path)


def conv(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def agent_pair(num_chosen: int = 2, num_rejected: int = 3, system: bool = True) -> dict:
    """A preference row shaped like ETO data: chosen / rejected alternate actions and observations."""
    prompt = ([{"role": "system", "content": "You are a helpful agent."}] if system else []) + [
        {"role": "user", "content": "Task: find the coin and take it."}
    ]

    def side(n, tag):
        msgs = []
        for t in range(n):
            msgs.append({"role": "assistant", "content": f"Thought: step {t} {tag}.\nAction: look around"})
            if t < n - 1:
                msgs.append({"role": "user", "content": f"Observation: You see a door {t}."})
        return msgs

    return {"prompt": prompt, "chosen": side(num_chosen, "good"), "rejected": side(num_rejected, "bad")}


def dataset_rows(n: int = 8, seed: int = 0) -> list[dict]:

    rng = random.Random(seed)
    return [agent_pair(rng.randint(1, 4), rng.randint(1, 5), system=bool(i % 2)) for i in range(n)]


#: The 3-action trajectory of the template table (docs/dmpo_trainer.md): a tool call, its result, two text actions.
TABLE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "search the shop",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
TABLE_PROMPT = conv(("system", "You are a shopping agent."), ("user", "Buy blue shoes."))
TABLE_TOOL_TRAJECTORY = [
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "blue shoes"}}}],
    },
    {"role": "tool", "name": "search", "content": "3 items found"},
    *conv(("assistant", "Thought: pick one.\nAction: click item 1"), ("user", "Observation: added to cart.")),
    *conv(("assistant", "Action: checkout")),
]
#: The same trajectory with the tool call as a text action and its result as a user message (templates without tools).
TABLE_TEXT_TRAJECTORY = conv(
    ("assistant", "Action: search blue shoes"),
    ("user", "Observation: 3 items found"),
    ("assistant", "Thought: pick one.\nAction: click item 1"),
    ("user", "Observation: added to cart."),
    ("assistant", "Action: checkout"),
)


def template_survey(template_file: str) -> dict:
    """How `tokenize_conversation` reads the table trajectories with one of TRL's templates.

    Returns ``{"path": "markers" | "prefix", "system": bool, "tool": [action texts] | "<refusal>", "text": ...}``;
    the prompt drops its system message when the template refuses system messages.
    """

    tok = template_tokenizer(template_file)
    out = {"path": "markers" if has_generation_markers(tok.chat_template) else "prefix", "system": True}

    def actions(prompt, completion, tools):
        try:
            tc = tokenize_conversation(tok, prompt, completion, tools=tools)
        except DMPODataError as err:
            return err.reason
        spans: dict[int, list[int]] = {}
        for token, t in zip(tc.input_ids, tc.turn_ids, strict=True):
            if t >= 0:
                spans.setdefault(t, []).append(token)
        return [tok.decode(spans[t]) for t in sorted(spans)]

    prompt = TABLE_PROMPT
    if "System role not supported" in str(actions(prompt, TABLE_TEXT_TRAJECTORY, None)):
        prompt, out["system"] = TABLE_PROMPT[1:], False
    out["tool"] = actions(prompt, TABLE_TOOL_TRAJECTORY, TABLE_TOOLS)
    out["text"] = actions(prompt, TABLE_TEXT_TRAJECTORY, None)
    return out
