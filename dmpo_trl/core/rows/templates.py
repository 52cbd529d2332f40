"""Chat-template paths to the action spans: the tokenizer's assistant mask, and action ends taken from the template.

`dmpo_trl.core.rows.tokenization.tokenize_conversation` finds the actions one of two ways:

- **generation markers** (this module): when the chat template wraps assistant output in ``{% generation %}`` /
  ``{% endgeneration %}`` (TRL's ``trl/chat_templates/*_training.jinja``), the tokenizer's own assistant mask,
  ``apply_chat_template(..., return_dict=True, return_assistant_tokens_mask=True)``, marks the tokens of every assistant
  message; each contiguous run of the mask is one message. The template's rendering need not have the prefix property
  (templates that rewrite history are fine: the whole conversation is tokenized as the template renders it).
- **prefix rendering** (`dmpo_trl.core.rows.tokenization`): otherwise.

Both paths apply DMPO's action rule to what they find: an action is what the model generates for the message, up to
and including its end-of-turn token (the last special token of the span); template markup after that token (ChatML's
``\\n`` after ``<|im_end|>``) is not an action. On the marker path the start is aligned to the generation prompt too:
when the block opens before the end of the generation prompt (``qwen2_5_training.jinja`` puts the ``\\n`` of
``<|im_start|>assistant\\n`` inside it), the tokens the generation prompt already holds are context, not action.

Cost of the marker path: linear in the number of actions. The conversation is rendered once as text and once by the
tokenizer's ``apply_chat_template`` (the mask and the offsets of its one BPE pass). The generation prompt of the first
action comes from its two prefix renders; every later one from a window that starts at the previous action (the
approach of `dmpo_trl.core.rows.tokenization.locate_actions`): ``prompt + messages[w:j]``, rendered without the generation prompt, must
continue verbatim the whole rendering from where message ``w`` starts. That gives the prefix renders' result whenever
the template renders a turn from the prompt and the turns since the previous action alone (every marker template of
TRL's table: `tests/core/rows/test_marker_locator.py` compares with the method before); where a window does not match
(Phi-3's prefixes end with EOS, templates that number turns), that action renders its prefixes.

Templates that close an assistant turn without a special token of their own (GLM-4.5: the next message's role token,
``<|user|>`` or ``<|observation|>``, is what the model emits to stop) get the action's end from the template
(`template_action_end`): the special token the template renders right after the message; after the last message, the
one it renders when a user message follows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import DMPODataError, TemplateRejected


__all__ = [
    "EMPTY_ACTION",
    "TEMPLATE_REMEDY",
    "action_end",
    "check_action_content",
    "check_action_once",
    "has_generation_markers",
    "marker_action_spans",
    "template_action_end",
]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
#: What every "this template cannot be aligned" error ends with: the two ways out.
TEMPLATE_REMEDY = (
    "use a training chat template with {% generation %} markers (TRL ships one per family as "
    "trl/chat_templates/<family>_training.jinja, e.g. qwen3_training.jinja), set as tokenizer.chat_template or given "
    "with chat_template_path (`dmpo-trl train --chat_template_path FILE`, the same for `dmpo-trl validate`)"
)
_PROBE = {"role": "user", "content": "x"}
_MASK_RUN = re.compile(rb"\x01+")
#: Characters of context compared before a generation prompt's overlap with its block.
_TAIL = 32
#: An action with nothing but its end-of-turn token (`str.format` with ``t``).
EMPTY_ACTION = (
    "action {t} is empty: the chat template renders nothing for the assistant message but its end-of-turn token "
    "(templates that drop tool_calls do this for a message that is only a tool call)"
)


def has_generation_markers(template: Any) -> bool:
    """Whether a chat template (a string) wraps assistant output in ``{% generation %}`` blocks."""
    return isinstance(template, str) and bool(_GENERATION_TAG.search(template))


def template_action_end(
    tokenizer, input_ids: list[int], k1: int, special: frozenset[int], render_continued
) -> int | None:
    """Index of the token that ends an action whose span ``[.., k1)`` holds no special token, or ``None``.

    The template's own end: the token at ``k1`` when it is special (the next message's role token). When the action
    ends the conversation (``k1 == len(input_ids)``), ``render_continued()`` gives the text the template renders after
    it when a user message follows; its first token, if special, is appended to ``input_ids`` (what the model emits to
    stop, e.g. GLM's ``<|user|>``).
    """
    if k1 < len(input_ids):
        return k1 if input_ids[k1] in special else None
    after = render_continued()
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    if ids and ids[0] in special:
        input_ids.append(ids[0])
        return k1
    return None


def action_end(
    tokenizer,
    input_ids: list[int],
    k0: int,
    k1: int,
    special: frozenset[int],
    render_continued,
    no_special: str,
    t: int,
    row: int | None,
    side: str | None,
) -> int:
    """Index of the token that ends action ``t`` (tokens ``[k0, k1)`` of its span): the one rule of both template paths.

    The last special token of the span (the end-of-turn token); in a span without one, the template's own end
    (`template_action_end`, which may append a token to ``input_ids``). Raises `DMPODataError` when there is none
    (``no_special`` says what the template renders instead) or when it leaves the action empty (`EMPTY_ACTION`).
    """
    eot = next((k for k in range(k1 - 1, k0 - 1, -1) if input_ids[k] in special), None)
    if eot is None:  # a template that closes the turn with the next message's role token (GLM-4.5)
        eot = template_action_end(tokenizer, input_ids, k1, special, render_continued)
    if eot is None:
        raise DMPODataError(
            f"action {t} has no end-of-turn token: {no_special} and none follows it, so the model could not learn to "
            f"stop; {TEMPLATE_REMEDY}",
            row,
            side,
        )
    if eot <= k0:
        raise DMPODataError(EMPTY_ACTION.format(t=t), row, side)
    return eot


def marker_action_spans(
    tokenizer,
    messages: list[dict[str, Any]],
    action_positions: list[int],
    *,
    render,
    template_kwargs: dict[str, Any],
    special: frozenset[int],
    row: int | None,
    side: str | None,
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the conversation and the ``[k0, k1)`` token span of every action, from the assistant mask.

    Linear in the number of actions: the conversation is rendered as text once and once more, as tokens, by the
    tokenizer's own ``apply_chat_template`` (its assistant mask, with the offsets of that one BPE pass); each action's
    generation prompt comes from a window (`_window_prompt`), or from the two prefix renders where the window does not
    match (`_prefix_prompt`).

    Args:
        tokenizer: a fast tokenizer whose chat template has generation markers.
        messages: the whole conversation (prompt + completion).
        action_positions: indices in ``messages`` of the completion's assistant messages, in order.
        render: ``render(messages, add_generation_prompt) -> str`` with the row's tools and template kwargs.
        template_kwargs: those keyword arguments (``tools`` and the row's ``chat_template_kwargs``).
        special: ids of the tokenizer's special tokens.
        row, side: for error messages.

    Returns:
        ``(input_ids, spans)``; each span ends right after the action's end-of-turn token.
    """
    full_text = render(messages, False)
    try:
        out = tokenizer.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            tokenizer_kwargs={"return_offsets_mapping": True},
            **template_kwargs,
        )
    except Exception as err:  # jinja2 errors, a template without markers for this conversation, ...
        raise DMPODataError(
            f"the chat template rejected the conversation ({type(err).__name__}: {err})", row, side
        ) from err
    input_ids, offsets = list(out["input_ids"]), out["offset_mapping"]
    # The text and the tokens come from the same template on the same input; where the tokens do not end with the
    # text (a normalizer that drops trailing characters), the text is tokenized again and compared token for token
    if not offsets or offsets[-1][1] != len(full_text):
        if list(tokenizer(full_text, add_special_tokens=False)["input_ids"]) != input_ids:
            raise DMPODataError(
                "the tokenizer's assistant mask does not come with the same tokens as the rendered conversation",
                row,
                side,
            )
    runs = [match.span() for match in _MASK_RUN.finditer(bytes(out["assistant_masks"]))]
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
    first_j = action_positions[0]
    base = anchor = None  # the rendering of messages[:first_j], and where the previous action's message starts
    for t, ((k0, k1), j) in enumerate(zip(runs, action_positions, strict=True)):
        located = None
        if anchor is not None:
            located = _window_prompt(render, messages, first_j, base, action_positions[t - 1], j, anchor, full_text)
        if located is None:
            located = _prefix_prompt(render, messages, j, full_text)
            if t == 0:
                base = located[2]
        prompt, anchor = located[:2]
        first = _action_start(full_text, offsets, k0, k1, prompt)
        if first is None:
            raise DMPODataError(
                f"cannot align tokens with the chat template: a token spans the end of the generation prompt of "
                f"action {t}, so the action cannot be separated exactly from it",
                row,
                side,
            )
        k0 = first
        eot = action_end(
            tokenizer,
            input_ids,
            k0,
            k1,
            special,
            lambda j=j: _continued(render, messages[: j + 1], full_text),
            "the chat template's generation block for it holds no special token",
            t,
            row,
            side,
        )
        end_char = offsets[eot][1] if eot < len(offsets) else len(full_text)
        check_action_content(full_text[offsets[k0][0] : end_char], messages[j], t, row, side)
        spans.append((k0, eot + 1))
    return input_ids, spans


@dataclass(frozen=True)
class _GenerationPrompt:
    """The renderings of the messages before an action with (``with_prompt``) and without (``without``) the generation
    prompt, as far as `_action_start` reads them: ``with_prompt == head[:cut] + rest`` (never built), whether it
    extends ``without`` and by what (``added``, else ``None``), and the last `_TAIL` characters of ``without``."""

    head: str
    cut: int
    rest: str
    added: str | None
    without_tail: str

    def __len__(self) -> int:
        return self.cut + len(self.rest)

    def tail(self, n: int) -> str:
        """The last ``n`` (at most ``len(self)``) characters of ``with_prompt``."""
        if n <= len(self.rest):
            return self.rest[len(self.rest) - n :]
        return self.head[self.cut - (n - len(self.rest)) : self.cut] + self.rest


def _prefix_prompt(render, messages, j: int, full_text: str) -> tuple[_GenerationPrompt, int | None, str]:
    """The generation prompt of the assistant message ``j`` from the two prefix renders (quadratic if done for every
    action), where message ``j``'s rendering starts in ``full_text`` (``None`` if ``without`` is not a prefix of it),
    and ``without``."""
    with_prompt, without = render(messages[:j], True), render(messages[:j], False)
    added = with_prompt[len(without) :] if with_prompt.startswith(without) else None
    prompt = _GenerationPrompt(with_prompt, len(with_prompt), "", added, without[-_TAIL:])
    return prompt, len(without) if full_text.startswith(without) else None, without


def _window_prompt(render, messages, first_j: int, base: str, w: int, j: int, anchor: int, full_text: str):
    """The generation prompt of the assistant message ``j`` from a window that starts at the previous action ``w``.

    The window is ``messages[:first_j] + messages[w:j]``; rendered without the generation prompt it must be ``base``
    (the rendering of ``messages[:first_j]``) followed verbatim by the characters of ``full_text`` from ``anchor``
    (where message ``w``'s rendering starts), so the messages before ``j`` render as ``full_text[:end]``; with the
    generation prompt it must start with ``base`` too. Returns ``(prompt, end)``, or ``None`` (the caller then renders
    the prefixes) when the template rejects the window or it does not match.
    """
    window = messages[:first_j] + messages[w:j]
    try:
        with_prompt, without = render(window, True), render(window, False)
    except TemplateRejected:  # e.g. a template that needs more context than the window holds
        return None
    n = len(base)
    if not (with_prompt.startswith(base) and without.startswith(base) and full_text.startswith(without[n:], anchor)):
        return None
    end = anchor + len(without) - n
    added = with_prompt[len(without) :] if with_prompt.startswith(without) else None
    return _GenerationPrompt(full_text, anchor, with_prompt[n:], added, full_text[max(0, end - _TAIL) : end]), end


def _continued(render, messages, full_text) -> str:
    """What the template renders after the last message when a user message follows."""
    continued = render([*messages, _PROBE], False)
    return continued[len(full_text) :] if continued.startswith(full_text) else ""


def _action_start(full_text: str, offsets, k0: int, k1: int, prompt: _GenerationPrompt) -> int | None:
    """First token of the generation block ``[k0, k1)`` that is action: after what the generation prompt holds.

    (a) The block opens with the tail of ``with_prompt`` (``qwen2_5_training.jinja``'s ``\\n``, DeepSeek's
    ``<｜tool▁outputs▁end｜>`` after tool results), the longest such tail that ``full_text`` also precedes with the
    `_TAIL` characters ``with_prompt`` has before it: the action starts after it (``None`` if a token straddles that
    point). (b) Otherwise, when the block follows the end of ``without`` and opens with the start of the generation
    prompt (a role token inside the block) before the template's text goes its own way (R1's past turns lack the
    ``<think>\\n`` its prompt prefills): the action starts after the whole tokens they share.
    """
    start, end = offsets[k0][0], offsets[k1 - 1][1]
    top = min(len(prompt), end - start)
    if top > 0:
        tail = prompt.tail(min(len(prompt), top + _TAIL))
        i = tail.find(full_text[start], len(tail) - top)  # longest first: m = len(tail) - i characters overlap
        while i != -1:
            m = len(tail) - i
            before = tail[i - min(_TAIL, len(prompt) - m) : i]
            if full_text.startswith(tail[i:], start) and full_text.endswith(before, 0, start):
                k = k0
                while k < k1 and offsets[k][1] <= start + m:
                    k += 1
                return k if k == k1 or offsets[k][0] >= start + m else None
            i = tail.find(full_text[start], i + 1)
    if prompt.added is not None and full_text.endswith(prompt.without_tail, 0, start):
        k = k0
        while k < k1 and prompt.added.startswith(full_text[start : offsets[k][1]]):
            k += 1
        return k
    return k0


def check_action_content(text: str, message: dict[str, Any], t: int, row: int | None, side: str | None) -> None:
    """Raise unless the action's text holds the message's content and the names of its tool calls.

    Catches templates that render an assistant message without what it says (vision templates that read only content
    parts, templates that drop ``tool_calls``), which would otherwise train an action on markup alone.
    """
    content = message.get("content")
    if isinstance(content, str) and content.strip() and "think>" not in content and content.strip() not in text:
        raise DMPODataError(
            f"the chat template does not render the content of action {t} (assistant message) inside its span "
            f"(rendered: {text[:60]!r}); a template that reads only content parts (vision templates) or rewrites the "
            f"message cannot be trained on as it is; {TEMPLATE_REMEDY}",
            row,
            side,
        )
    for call in message.get("tool_calls") or ():
        function = call.get("function", call) if isinstance(call, dict) else {}
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name not in text:
            raise DMPODataError(
                f"the chat template drops the tool call {name!r} of action {t}: it renders nothing of it, so the "
                f"model would not learn the call; {TEMPLATE_REMEDY}",
                row,
                side,
            )
    check_action_once(text, message, t, row, side)


#: Special-token-like markup (``<|im_end|>``, ``</s>``, ``<end_of_turn>``, ``[/INST]``), left out when counting how
#: often an action's content occurs in its span, so that short contents (``n``, ``end``) are not counted in it.
_MARKUP = re.compile(r"<[|/]?[^\s<>]{0,40}?[|/]?>|\[/?[A-Z_]+\]")


def check_action_once(text: str, message: dict[str, Any], t: int, row: int | None, side: str | None) -> None:
    """Raise if the action's span renders the message's content, or one of its tool calls, more than once.

    A template that renders assistant content twice (e.g. once as text and once inside a tool-call or reasoning
    block) would train every action twice over. The content may also occur inside the message's own tool-call
    arguments or names, and an argument value (of 4 characters or more) inside the content or another value; special-
    token markup (``<|im_end|>``, ``</s>``, ``[/INST]``) is not counted, so a short content such as ``n`` or ``end``
    is not found in it.
    """
    calls = [c.get("function", c) if isinstance(c, dict) else {} for c in message.get("tool_calls") or ()]
    calls = [c for c in calls if isinstance(c, dict)]
    args_text = " ".join(str(c.get("arguments", "")) for c in calls)  # what a content may legitimately repeat
    content = message.get("content")
    plain = _MARKUP.sub(" ", text)
    if isinstance(content, str) and content.strip() and "think>" not in content:
        c = content.strip()
        allowed = 1 + args_text.count(c) + sum(str(call.get("name", "")).count(c) for call in calls)
        if (plain if not _MARKUP.search(c) else text).count(c) > allowed:
            raise DMPODataError(
                f"the chat template renders the content of action {t} (assistant message) more than once inside "
                f"its span (rendered: {text[:80]!r}): the model would be trained on every action twice; fix the "
                f"template so that it renders each assistant message once, or {TEMPLATE_REMEDY}",
                row,
                side,
            )
    values = [v for call in calls for v in _argument_strings(call.get("arguments"))]
    for value in set(values):
        others = sum(v.count(value) for v in values) - values.count(value)
        if len(value) >= 4 and plain.count(value) > values.count(value) + others + str(content).count(value):
            raise DMPODataError(
                f"the chat template renders the tool call arguments of action {t} more than once inside its span "
                f"({value!r} occurs {plain.count(value)} times): the model would be trained on the call twice; fix "
                f"the template so that it renders each call once, or {TEMPLATE_REMEDY}",
                row,
                side,
            )


def _argument_strings(arguments: Any) -> list[str]:
    """The string values inside tool-call arguments (a mapping, or a JSON string of one)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return [arguments.strip()] if arguments.strip() else []
    if isinstance(arguments, dict):
        return [s for v in arguments.values() for s in _argument_strings(v)]
    if isinstance(arguments, list):
        return [s for v in arguments for s in _argument_strings(v)]
    return [arguments] if isinstance(arguments, str) and arguments.strip() else []
