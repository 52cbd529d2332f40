"""Tool results must answer the calls they follow: `check_tool_call_ids`, one of `check_pair`'s rules
(`dmpo_trl.core.rows.checks`).

Where calls carry ids (``tool_calls[k].id``) and results name them (``tool_call_id`` on a ``tool`` message), a
template renders each result next to the call it names; a result that names no call, two calls with one id, or a call
left unanswered while another is answered would train the model on a conversation that pairs results with the wrong
calls. Messages without ids are not checked (many formats have none): the results then follow the calls in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dmpo_trl.core.errors import DMPODataError


__all__ = ["check_tool_call_ids"]


def _call_ids(message: Mapping[str, Any]) -> list[str]:
    return [str(c["id"]) for c in message.get("tool_calls") or () if isinstance(c, Mapping) and c.get("id")]


def check_tool_call_ids(messages: Sequence[Mapping[str, Any]], side: str, row: int | None = None) -> None:
    """Raise `DMPODataError` when a tool result's ``tool_call_id`` answers no call of the assistant message before
    it, answers one twice, when two calls share an id, or when the results name some calls and leave another
    unanswered before the next action."""
    open_ids: list[str] = []  # the last action's ids not answered yet
    named = False  # whether a result since the last action named its call
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant":
            if open_ids and named:
                raise DMPODataError(
                    f"the tool call {open_ids[0]!r} before message {i} has no result while the other calls of its "
                    "action have one: answer every call (a tool message with its tool_call_id) or remove it",
                    row,
                    side,
                )
            ids = _call_ids(message)
            if len(set(ids)) != len(ids):
                twice = next(x for x in ids if ids.count(x) > 1)
                raise DMPODataError(
                    f"message {i}: two tool calls share the id {twice!r}: give each call its own id", row, side
                )
            open_ids, named = ids, False
        elif role == "tool" and message.get("tool_call_id") is not None:
            answered = str(message["tool_call_id"])
            if answered not in open_ids:
                raise DMPODataError(
                    f"message {i}: the tool result answers the call id {answered!r}, which no unanswered call of "
                    "the action before it has: fix its tool_call_id",
                    row,
                    side,
                )
            open_ids.remove(answered)
            named = True
