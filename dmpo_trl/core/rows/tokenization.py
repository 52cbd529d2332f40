"""Conversation -> token ids + per-token turn index, built together and token-exact.

Chat templates with ``{% generation %}`` markers take the tokenizer's own assistant mask
(`dmpo_trl.core.rows.templates`); the others the prefix rendering below, which works with any chat template with the *prefix property* (the rendering of a
conversation prefix is a prefix of the rendering of the whole conversation):

1. Render the whole conversation once and tokenize it once, with character offsets (fast tokenizers).
2. For assistant message ``j`` (action ``t``), render ``messages[:j]`` with the generation prompt and
   ``messages[:j + 1]`` without it. Both must be prefixes of the whole rendering; the characters between their ends
   are what the template emits for that assistant message after the role header.
3. Map those character boundaries to token boundaries (no token may straddle one), then keep the tokens up to and
   including the last special token of the span (the end-of-turn token, e.g. ``<|im_end|>``, ``<|eot_id|>``,
   ``</s>``, ``<end_of_turn>``). What follows it (e.g. the ``\\n`` ChatML puts after ``<|im_end|>``) is template
   markup the model never generates, so it is not an action. A template that closes the turn without a special
   token (GLM-4.5) ends the action with the special token it renders next (`dmpo_trl.core.rows.templates.action_end`,
   the one rule of both paths).

Every token of action ``t`` gets turn id ``t``; everything else (prompt, observations, role headers, markup) gets
``-1``. Any template or row where this cannot be done exactly raises `DMPODataError` naming the row and the reason;
a row never comes out silently all-masked.

Cost: linear in the trajectory. Step 2 is done for the first action only; every later action is located from a
window that starts at the previous one and is verified against the whole rendering (the action locator below),
with step 2 as the exact fallback. One tokenization per trajectory remains (linear, and then the dominant cost).

The action locator finds where each action of a rendered conversation lies, in characters. Step 2 for the assistant
message ``j`` (`prefix_span`), done for every action, renders ``2T`` growing prefixes (quadratic in ``T``: 94% of the
tokenization time at 200 turns).

`locate_actions` renders them only for the first action and locates every later action in a window: with ``w`` the
previous action, it renders ``prompt + messages[w:j]`` (with the generation prompt) and
``prompt + messages[w:j + 1]``, and requires the latter to be the prompt with its generation prompt, then action
``w`` exactly as it appears in the whole rendering, then verbatim the characters that follow action ``w`` there.
The boundaries found this way are step 2's whenever the template renders a turn from the prompt and the turns since
the previous action alone (every template of the test table); where the window does not match (a template that
numbers turns, rewrites history, ...) that action falls back to the prefix renders, so the result is always step
2's or its error.
"""

from __future__ import annotations

import bisect
import json
import operator
from dataclasses import dataclass
from typing import Any

from ..errors import DMPODataError
from ..errors import TemplateRejected as _TemplateRejected
from .templates import (
    TEMPLATE_REMEDY,
    action_end,
    check_action_content,
    has_generation_markers,
    marker_action_spans,
)


__all__ = [
    "TokenizedConversation",
    "locate_actions",
    "split_prompt",
    "tokenize_conversation",
    "tokenize_pair",
    "truncate_trajectory",
]

NOT_ACTION = -1
_first = operator.itemgetter(0)


@dataclass(frozen=True)
class TokenizedConversation:
    """Token ids of a rendered conversation with the action index of every token."""

    input_ids: list[int]
    """Token ids of the whole conversation (prompt + completion)."""
    turn_ids: list[int]
    """Per token: index ``t`` of the action it belongs to, or ``-1`` if it is not an action token."""
    num_turns: int
    """``T``: number of actions (assistant messages) in the completion."""
    prompt_len: int
    """Number of tokens before the first action token (prompt + first generation header)."""


def _render(tokenizer, messages, add_generation_prompt: bool, tools, chat_template_kwargs) -> str:
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tools=tools,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **chat_template_kwargs,
        )
    except Exception as err:  # jinja2 TemplateError from `raise_exception`, missing keys, ...
        raise _TemplateRejected(f"{type(err).__name__}: {err}") from err
    if not isinstance(text, str):  # some processors return a list for batched input
        text = text[0]
    return text


def _render_after(tokenizer, messages, full_text, tools, chat_template_kwargs) -> str:
    """What the template renders after the last of `messages` when a user message follows (for the action end)."""
    continued = _render(tokenizer, [*messages, {"role": "user", "content": "x"}], False, tools, chat_template_kwargs)
    return continued[len(full_text) :] if continued.startswith(full_text) else ""


def _special_ids(tokenizer) -> frozenset[int]:
    ids = set(tokenizer.all_special_ids)
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(token_id)
    return frozenset(ids)


def _token_boundary(offsets, char_pos: int, what: str, row, side) -> int:
    """Index of the first token starting at or after `char_pos`; error if a token straddles `char_pos`."""
    k = bisect.bisect_left(offsets, char_pos, key=_first)  # no per-token list of starts
    if k > 0 and offsets[k - 1][1] > char_pos:
        raise DMPODataError(
            f"cannot align tokens with the chat template: a token spans the {what} (character {char_pos}), so the "
            "action tokens cannot be separated exactly from the surrounding markup",
            row=row,
            side=side,
        )
    return k


def tokenize_conversation(
    tokenizer,
    prompt: list[dict[str, Any]],
    completion: list[dict[str, Any]],
    *,
    tools: list[dict] | str | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    row: int | None = None,
    side: str | None = None,
) -> TokenizedConversation:
    """Tokenize ``prompt + completion`` once and mark every action token with its turn index.

    Args:
        tokenizer: a fast Hugging Face tokenizer with a chat template (offsets are needed).
        prompt: messages before the first action (system, task, first observation...).
        completion: alternating actions (``assistant`` messages, possibly with ``tool_calls``) and observations
            (any other role).
        tools: JSON-schema tool definitions passed to the chat template (a list, or a JSON string).
        chat_template_kwargs: extra keyword arguments for the chat template.
        row, side: where the conversation comes from, for error messages.

    Returns:
        `TokenizedConversation`.

    Raises:
        `DMPODataError`: no action in the completion, a template without the prefix property, tokens that cannot be
            aligned with the action boundaries, or an action with no end-of-turn token.
    """
    if isinstance(tools, str):
        tools = json.loads(tools)
    chat_template_kwargs = dict(chat_template_kwargs or {})
    if not getattr(tokenizer, "is_fast", False):
        raise DMPODataError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; DMPO's action masks need character offsets "
            "(load the tokenizer with use_fast=True)",
            row=row,
            side=side,
        )
    messages = list(prompt) + list(completion)
    action_positions = [len(prompt) + i for i, m in enumerate(completion) if m.get("role") == "assistant"]
    if not action_positions:
        raise DMPODataError("no assistant message (action) in the completion", row=row, side=side)

    def render(msgs, add_generation_prompt=False):
        return _render(tokenizer, msgs, add_generation_prompt, tools, chat_template_kwargs)

    special = _special_ids(tokenizer)
    if has_generation_markers(chat_template_kwargs.get("chat_template", tokenizer.chat_template)):
        try:
            input_ids, spans = marker_action_spans(
                tokenizer,
                messages,
                action_positions,
                render=render,
                template_kwargs={"tools": tools, **chat_template_kwargs},
                special=special,
                row=row,
                side=side,
            )
        except _TemplateRejected as err:
            raise DMPODataError(f"the chat template rejected the conversation ({err})", row=row, side=side) from err
        turn_ids = [NOT_ACTION] * len(input_ids)
        for t, (k0, k1) in enumerate(spans):
            turn_ids[k0:k1] = [t] * (k1 - k0)
        return TokenizedConversation(input_ids, turn_ids, len(spans), turn_ids.index(0))

    try:
        full_text = render(messages)
        char_spans = locate_actions(render, messages, len(prompt), action_positions, full_text, row, side)
    except _TemplateRejected as err:
        raise DMPODataError(f"the chat template rejected the conversation ({err})", row=row, side=side) from err

    encoding = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    offsets = encoding["offset_mapping"]

    turn_ids = [NOT_ACTION] * len(input_ids)
    for t, (char_start, char_end) in enumerate(char_spans):
        k0 = _token_boundary(offsets, char_start, f"start of action {t}", row, side)
        k1 = _token_boundary(offsets, char_end, f"end of action {t}", row, side)
        j = action_positions[t]
        eot = action_end(
            tokenizer,
            input_ids,
            k0,
            k1,
            special,
            lambda j=j: _render_after(tokenizer, messages[: j + 1], full_text, tools, chat_template_kwargs),
            "the chat template closes the assistant message without a special token",
            t,
            row,
            side,
        )
        turn_ids.extend([NOT_ACTION] * (len(input_ids) - len(turn_ids)))  # the template's end may add a token
        check_action_content(full_text[char_start:char_end], messages[action_positions[t]], t, row, side)
        turn_ids[k0 : eot + 1] = [t] * (eot + 1 - k0)

    return TokenizedConversation(
        input_ids=input_ids,
        turn_ids=turn_ids,
        num_turns=len(char_spans),
        prompt_len=turn_ids.index(0),
    )


def split_prompt(example: dict[str, Any], row: int | None = None) -> tuple[list, list, list]:
    """Return ``(prompt, chosen, rejected)`` message lists of a conversational preference row.

    Rows without a ``prompt`` column (implicit prompt) are split before their first assistant message; the two
    prompts must then be identical. The common prefix is *not* used: shared early actions stay actions.
    """
    for key in ("chosen", "rejected"):
        if key not in example:
            raise DMPODataError(f"missing column {key!r}", row=row)
        if not isinstance(example[key], list | tuple) or not all(isinstance(m, dict) for m in example[key]):
            raise DMPODataError(
                f"{key!r} must be a list of messages ({{'role', 'content'}} dicts); DMPO trains on conversational "
                "(multi-turn) data",
                row=row,
                side=key,
            )
    if example.get("prompt") is not None:
        prompt = example["prompt"]
        if not isinstance(prompt, list | tuple) or not all(isinstance(m, dict) for m in prompt):
            raise DMPODataError("'prompt' must be a list of messages", row=row, side="prompt")
        return list(prompt), list(example["chosen"]), list(example["rejected"])

    def cut(messages):
        return next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))

    chosen, rejected = list(example["chosen"]), list(example["rejected"])
    ci, ri = cut(chosen), cut(rejected)
    if chosen[:ci] != rejected[:ri]:
        raise DMPODataError(
            "the prompt differs between chosen and rejected (messages before the first assistant message must be "
            "identical)",
            row=row,
        )
    return chosen[:ci], chosen[ci:], rejected[ri:]


def tokenize_pair(tokenizer, example: dict[str, Any], row: int | None = None) -> dict[str, Any]:
    """Tokenize one preference row into the columns DMPOTrainer trains on.

    Returns a dict with ``prompt_ids`` (shared prompt tokens), ``chosen_ids`` / ``rejected_ids`` (the tokens after the
    prompt), ``chosen_turn_ids`` / ``rejected_turn_ids`` (aligned with ``*_ids``; ``-1`` = not an action) and
    ``chosen_num_turns`` / ``rejected_num_turns`` (``T_w`` and ``T_l``).
    """
    prompt, chosen, rejected = split_prompt(example, row)
    kwargs = {"tools": example.get("tools"), "chat_template_kwargs": example.get("chat_template_kwargs"), "row": row}
    tok_w = tokenize_conversation(tokenizer, prompt, chosen, side="chosen", **kwargs)
    tok_l = tokenize_conversation(tokenizer, prompt, rejected, side="rejected", **kwargs)
    # Both sides start with the same prompt tokens up to the first action of the shorter prompt
    prompt_len = min(tok_w.prompt_len, tok_l.prompt_len)
    if tok_w.input_ids[:prompt_len] != tok_l.input_ids[:prompt_len]:
        raise DMPODataError("the prompt tokenizes differently in chosen and rejected", row=row)
    return {
        "prompt_ids": tok_w.input_ids[:prompt_len],
        "chosen_ids": tok_w.input_ids[prompt_len:],
        "rejected_ids": tok_l.input_ids[prompt_len:],
        "chosen_turn_ids": tok_w.turn_ids[prompt_len:],
        "rejected_turn_ids": tok_l.turn_ids[prompt_len:],
        "chosen_num_turns": tok_w.num_turns,
        "rejected_num_turns": tok_l.num_turns,
    }


def truncate_trajectory(
    prompt_len: int, ids: list[int], turn_ids: list[int], max_length: int | None
) -> tuple[list[int], list[int], int]:
    """Cut a trajectory (``prompt + completion`` ids) to at most ``max_length`` tokens, dropping whole actions.

    An action that does not fit entirely is dropped together with everything after it; the sequence then ends right
    after the last kept action's end-of-turn token. Turn ids are unchanged, so kept actions keep their weights
    (``T`` stays the trajectory's real number of actions).

    Args:
        prompt_len: number of prompt tokens at the start of ``ids`` (they are never actions).
        ids: token ids of prompt + completion.
        turn_ids: aligned turn ids (``-1`` = not an action).
        max_length: maximum number of tokens, or ``None`` for no limit.

    Returns:
        ``(ids, turn_ids, kept_turns)``: the possibly shortened sequence and the number of actions kept (``0`` when
        not even the first action fits: the caller decides whether that is an error).
    """
    if len(ids) != len(turn_ids):
        raise ValueError("ids and turn_ids must have the same length")
    num_turns = max(turn_ids, default=NOT_ACTION) + 1
    if max_length is None or len(ids) <= max_length:
        return ids, turn_ids, num_turns
    last_token: dict[int, int] = {}
    for k in range(prompt_len, len(turn_ids)):
        if turn_ids[k] >= 0:
            last_token[turn_ids[k]] = k
    # Actions come in order, so the ones that fit entirely form a prefix 0 .. kept_turns-1
    kept_turns = sum(1 for end in last_token.values() if end < max_length)
    if kept_turns == 0:
        return ids[:0], turn_ids[:0], 0
    cut = last_token[kept_turns - 1] + 1
    return ids[:cut], turn_ids[:cut], kept_turns


# ------------------------------------------------------------------ the action locator
def prefix_span(render, messages, j: int, full_text: str, row, side) -> tuple[int, int]:
    """Step 2 of `dmpo_trl.core.rows.tokenization` for the assistant message ``j``: render both prefixes, check, return the span."""
    start_text, end_text = render(messages[:j], True), render(messages[: j + 1])
    for text, what in ((start_text, "with the generation prompt"), (end_text, "")):
        if not full_text.startswith(text):
            cut = next(
                (i for i, (a, b) in enumerate(zip(text, full_text, strict=False)) if a != b),
                min(len(text), len(full_text)),
            )
            raise DMPODataError(
                f"the chat template breaks the prefix property: messages[:{j if what else j + 1}] rendered "
                f"{what + ' ' if what else ''}is not a prefix of the whole conversation (they differ at character "
                f"{cut}: {text[cut : cut + 30]!r} vs {full_text[cut : cut + 30]!r}). DMPO needs every turn rendered "
                f"the same way in every prefix (templates that rewrite history, e.g. dropping past reasoning, do "
                f"not); {TEMPLATE_REMEDY}",
                row=row,
                side=side,
            )
    if len(end_text) <= len(start_text):
        raise DMPODataError(
            f"the chat template renders assistant message {j} as nothing after its generation prompt",
            row=row,
            side=side,
        )
    return len(start_text), len(end_text)


def window_span(render, messages, prompt_head: str, prompt_len: int, w: int, j: int, span_w, full_text: str):
    """The span of assistant message ``j`` found from a window that starts at the previous action ``w``, or None when
    the window's rendering does not match ``full_text`` where it should.

    ``span_w`` is action ``w``'s span in ``full_text`` and ``prompt_head`` the prompt rendered with the generation
    prompt: the window ``prompt + messages[w:j + 1]`` must render as ``prompt_head + full_text[span_w]`` followed by
    exactly the characters of ``full_text`` after ``span_w``'s end.
    """
    prompt = messages[:prompt_len]
    try:
        start_text = render(prompt + messages[w:j], True)
        end_text = render(prompt + messages[w : j + 1])
    except _TemplateRejected:  # e.g. a template that needs more context than the window holds
        return None
    start_w, end_w = span_w
    anchor = len(prompt_head) + end_w - start_w
    if not (
        end_text.startswith(start_text)
        and len(start_text) >= anchor
        and len(end_text) > len(start_text)
        and end_text.startswith(prompt_head)
        and end_text.startswith(full_text[start_w:end_w], len(prompt_head))
        and full_text.startswith(end_text[anchor:], end_w)
    ):
        return None
    return end_w + len(start_text) - anchor, end_w + len(end_text) - anchor


def locate_actions(render, messages, prompt_len, action_positions, full_text, row, side) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of every assistant message in ``full_text`` (see the module docstring)."""
    spans = [prefix_span(render, messages, action_positions[0], full_text, row, side)]
    if len(action_positions) > 1:
        try:
            prompt_head = render(messages[:prompt_len], True)
        except _TemplateRejected:
            prompt_head = None
        for w, j in zip(action_positions[:-1], action_positions[1:], strict=True):
            span = None
            if prompt_head is not None:
                span = window_span(render, messages, prompt_head, prompt_len, w, j, spans[-1], full_text)
            spans.append(span or prefix_span(render, messages, j, full_text, row, side))
    return spans
