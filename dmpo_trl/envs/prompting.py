"""How an episode becomes a conversation, and how a model's reply becomes an action.

Format (used by the pair builder and by the evaluation, so training and evaluation see the same thing):

* prompt: a system message (the rules and the environment's action syntax) and a user message with the task
  description and the first observation, separated by a blank line;
* every action is an assistant message whose content is exactly the action string (``take coin``);
* every observation is a user message whose content is exactly the environment's reply.

`parse_action` also accepts ETO/ReAct-style replies (``Thought: ...\\nAction: take coin``): it takes the text after
the last ``Action:``; otherwise the first non-empty line. It strips quotes, backticks and a trailing period and
lower-cases the result.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING


if TYPE_CHECKING:  # annotations only: `base` imports this module
    from .base import AgentEnv, EnvReset


__all__ = [
    "SYSTEM_PROMPT",
    "action_message",
    "build_prompt",
    "default_prompt",
    "observation_message",
    "parse_action",
]

SYSTEM_PROMPT = (
    "You are an agent in a text-based environment. Each turn you get an observation; reply with exactly one "
    "action, as a short command and nothing else."
)

_ACTION_RE = re.compile(r"action\s*:\s*", re.IGNORECASE)
_MAX_ACTION_CHARS = 200


def build_prompt(env: AgentEnv, start: EnvReset) -> list[dict[str, str]]:
    """The prompt messages of an episode: ``env.prompt_messages(start)`` (by default `default_prompt`)."""
    return env.prompt_messages(start)


def default_prompt(env: AgentEnv, start: EnvReset) -> list[dict[str, str]]:
    """System rules (+ the environment's action hint) and task + first observation."""
    system = SYSTEM_PROMPT if not env.action_hint else f"{SYSTEM_PROMPT} {env.action_hint}"
    user = f"{start.task_description.strip()}\n\n{start.observation.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def action_message(action: str) -> dict[str, str]:
    """The assistant message of one action (its content is the action string)."""
    return {"role": "assistant", "content": action}


def observation_message(observation: str) -> dict[str, str]:
    """The user message of one observation (its content is the environment's reply, verbatim)."""
    return {"role": "user", "content": observation}


def parse_action(text: str) -> str:
    """Extract the action from a model reply (see the module docstring); ``""`` when there is none."""
    matches = list(_ACTION_RE.finditer(text))
    if matches:
        text = text[matches[-1].end() :]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.strip().strip("`'\"").strip()
    line = line.rstrip(".!").strip()
    line = re.sub(r"\s+", " ", line)
    return line[:_MAX_ACTION_CHARS].lower()
