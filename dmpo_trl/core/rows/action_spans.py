"""Where each action of a rendered conversation lies, in characters: in time linear in the trajectory.

`dmpo_trl.core.rows.tokenization` maps these character spans to tokens. Its step 2, for the assistant message ``j``, renders
``messages[:j]`` with the generation prompt and ``messages[:j + 1]`` without it (`prefix_span`): the characters
between their ends are the message. Done for every action, that renders ``2T`` growing prefixes (quadratic in ``T``:
94% of the tokenization time at 200 turns).

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

from ..errors import DMPODataError, TemplateRejected
from .templates import TEMPLATE_REMEDY


__all__ = ["TemplateRejected", "locate_actions", "prefix_span", "window_span"]


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
    except TemplateRejected:  # e.g. a template that needs more context than the window holds
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
        except TemplateRejected:
            prompt_head = None
        for w, j in zip(action_positions[:-1], action_positions[1:], strict=True):
            span = None
            if prompt_head is not None:
                span = window_span(render, messages, prompt_head, prompt_len, w, j, spans[-1], full_text)
            spans.append(span or prefix_span(render, messages, j, full_text, row, side))
    return spans
