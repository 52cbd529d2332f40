"""A TRL `environment_factory` environment as an `AgentEnv`: one environment for `GRPOTrainer` online and for
DMPO offline (pairs, explore, evaluation).

TRL's contract (`GRPOTrainer(environment_factory=...)`, TRL 1.16): the factory returns an object whose public
methods are tools (type-hinted, Google-style docstrings), with a `reset(**row)` that receives a dataset row and
returns ``None`` or the first observation (appended to the last user message of the row's ``prompt``), and an
optional `get_reward()` that scores the rollout from the environment's state. A rollout is a sequence of tool calls,
each answered by a ``tool`` message with the tool's result (``{"error": ...}`` if it raised), until the model replies
without a tool call.

`ToolEnvAdapter(factory, rows)` maps that onto the project's interface:

- variation ``i`` is row ``i`` of `rows`; `reset(i)` calls ``env.reset(**rows[i])`` on one instance made by the
  factory; splits come from `splits` or from a ``split`` column of the rows;
- the prompt is the row's ``prompt`` with the first observation appended to its last message, exactly as TRL does;
  `tool_schemas()` are the JSON schemas of the tool methods (transformers' `get_json_schema`), passed to the chat
  template everywhere (pairs get a ``tools`` column, rollouts and evaluation render with them);
- an action is a tool call, written as the canonical JSON string ``{"arguments": {...}, "name": ...}``; it renders
  as an assistant message with ``tool_calls`` and the reply as a ``tool`` message (name + content), through the
  model's chat template. A model reply is parsed (`parse_reply`) into a tool call (the JSON object with a ``name``,
  inside ``<tool_call>`` tags or not); a reply without one is a final answer: it ends the episode and renders as a
  plain assistant message;
- `step` runs the tool; an unknown tool, bad arguments or an exception is an invalid action whose observation is
  TRL's ``{"error": "..."}``. The score after each step is ``get_reward()`` (``0`` without one); `success_score`
  decides success. An environment with a truthy ``done`` attribute ends the episode too;
- gold actions (for expert trajectories) come from the row's `gold_column` (a list of ``{"name", "arguments"}``) or
  from the environment's own ``gold_actions()``.

The environment must be deterministic given its row: the explore stage and the pair builder replay episodes from
`reset`.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import AgentEnv, DMPOEnvError, EnvReset, EnvStep, Split, UnknownTaskError


__all__ = ["ToolEnvAdapter", "tool_call_action"]

_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def tool_call_action(name: str, arguments: Mapping[str, Any] | None = None) -> str:
    """The action string of one tool call: canonical JSON ``{"arguments": {...}, "name": name}``."""
    return json.dumps({"arguments": dict(arguments or {}), "name": name}, sort_keys=True)


def _as_call(action: str) -> dict[str, Any] | None:
    try:
        call = json.loads(action)
    except (TypeError, ValueError):
        return None
    if isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments", {}), dict):
        return {"name": call["name"], "arguments": call.get("arguments", {})}
    return None


def _json_objects(text: str):
    """Every balanced ``{...}`` substring that parses as JSON, left to right."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, _ = decoder.raw_decode(text[start:])
        except ValueError:
            continue
        yield obj


class ToolEnvAdapter(AgentEnv):
    """A TRL `environment_factory` environment as an `AgentEnv` (see the module docstring).

    Args:
        environment_factory: zero-argument callable returning the environment (what `GRPOTrainer` takes).
        rows: the dataset rows (dicts with a ``prompt``: a list of messages or a string), one per variation: a list
            of dicts or a `datasets.Dataset` (gold tool-call arguments that Arrow filled with ``None`` are dropped).
        task: a name for messages and pair ids (default: the environment class name).
        splits: variations (row indices) of ``"train"`` / ``"dev"`` / ``"test"``; default: the rows' ``split``
            column.
        gold_column: the row column with the expert tool calls.
        success_score: the score at which an episode counts as solved.
    """

    env_name = "tool-env"

    def __init__(
        self,
        environment_factory: Callable[[], Any],
        rows: Sequence[Mapping[str, Any]],
        *,
        task: str | None = None,
        splits: Mapping[str, Sequence[int]] | None = None,
        gold_column: str = "gold_actions",
        success_score: float = 1.0,
    ):
        self.env = environment_factory()
        if not callable(getattr(self.env, "reset", None)):
            raise TypeError("the environment returned by environment_factory must define a callable `reset`")
        super().__init__(task or type(self.env).__name__)
        self.rows = [dict(r) for r in rows]
        self.gold_column = gold_column
        self.success_score = float(success_score)
        self._splits = {k: [int(v) for v in vs] for k, vs in splits.items()} if splits is not None else None
        # the same tool methods GRPOTrainer exposes: public functions of the class except reset / get_reward
        self.tools: dict[str, Callable[..., Any]] = {
            name: getattr(self.env, name)
            for name, _ in inspect.getmembers(type(self.env), predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")
        }
        from transformers.utils import get_json_schema

        self._schemas = [get_json_schema(fn) for fn in self.tools.values()]
        self._first_observation = ""

    # ---- episodes ----------------------------------------------------------------------------------------------
    def _row(self, variation: int) -> dict[str, Any]:
        if not 0 <= variation < len(self.rows):
            raise UnknownTaskError(f"{self.describe()}: variation {variation} is not a row (0..{len(self.rows) - 1})")
        return self.rows[variation]

    def _reset(self, variation: int) -> EnvReset:
        row = self._row(variation)
        observation = self.env.reset(**row)
        if observation is not None and not isinstance(observation, str):
            raise DMPOEnvError(f"{self.describe()}: reset() returned {type(observation).__name__}, not a string")
        self._first_observation = observation or ""
        prompt = row.get("prompt")
        task = prompt if isinstance(prompt, str) else (prompt[-1].get("content", "") if prompt else "")
        return EnvReset(self._first_observation, str(task), score=self._reward(), info={"row": variation})

    def _reward(self) -> float:
        get_reward = getattr(self.env, "get_reward", None)
        return float(get_reward()) if callable(get_reward) else 0.0

    def _step(self, action: str) -> EnvStep:
        call = _as_call(action)
        if call is None:  # a final answer: the rollout ends, as in GRPOTrainer
            score = self._reward()
            return EnvStep("", score, done=True, success=score >= self.success_score, info={"final_answer": True})
        valid = True
        if call["name"] not in self.tools:
            valid, result = False, {"error": f"Tool {call['name']} not found."}
        else:
            try:
                result = self.tools[call["name"]](**call["arguments"])
            except Exception as err:  # TRL turns every tool failure into an error message for the model
                valid, result = False, {"error": str(err)}
        score = self._reward()
        done = bool(getattr(self.env, "done", False))
        return EnvStep(str(result), score, done=done, success=score >= self.success_score, valid=valid)

    def valid_actions(self) -> list[str]:
        """The environment's own ``valid_actions()`` (tool calls as ``{"name", "arguments"}``) if it has one, else
        ``[]``: tool environments do not list their actions (the clean pair sampler then has nothing to draw from;
        use the explore stage)."""
        own = getattr(self.env, "valid_actions", None)
        if not callable(own):
            return []
        return [tool_call_action(c["name"], c.get("arguments")) if isinstance(c, Mapping) else str(c) for c in own()]

    def invalid_action(self, rng) -> str:
        """A tool call the environment rejects (for the noisy pair sampler): an unknown tool, or a known tool with an
        argument it does not take."""
        names = sorted(self.tools)
        if not names or rng.random() < 0.5:
            return tool_call_action(rng.choice(["open_portal", "teleport", "fly"]))
        return tool_call_action(rng.choice(names), {"unexpected_argument": "unicorn"})

    def gold_actions(self) -> list[str]:
        calls = self._row(self.variation if self.variation is not None else 0).get(self.gold_column)
        if calls is None and callable(getattr(self.env, "gold_actions", None)):
            calls = self.env.gold_actions()
        if calls is None:
            raise NotImplementedError(f"{self.describe()}: no {self.gold_column!r} column and no gold_actions()")
        actions = []
        for call in calls:
            if not isinstance(call, Mapping):
                actions.append(str(call))
                continue
            # a datasets.Dataset gives every row the union of the argument keys, the missing ones as None
            arguments = {k: v for k, v in (call.get("arguments") or {}).items() if v is not None}
            actions.append(tool_call_action(call["name"], arguments))
        return actions

    def variations(self, split: Split) -> list[int]:
        if self._splits is not None:
            return list(self._splits.get(split, []))
        if all("split" in r for r in self.rows):
            return [i for i, r in enumerate(self.rows) if r["split"] == split]
        raise NotImplementedError(f"{self.describe()}: pass splits= or give the rows a 'split' column")

    # ---- conversation format -----------------------------------------------------------------------------------
    def prompt_messages(self, start: EnvReset) -> list[dict[str, Any]]:
        prompt = self._row(start.info["row"])["prompt"]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if start.observation:
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + start.observation}
        return messages

    def turn_messages(self, action: str, step: EnvStep) -> list[dict[str, Any]]:
        call = _as_call(action)
        if call is None:
            return [{"role": "assistant", "content": action}]
        return [
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]},
            {"role": "tool", "name": call["name"], "content": step.observation},
        ]

    def action_of(self, message: dict[str, Any]) -> str:
        calls = message.get("tool_calls")
        if calls:
            function = calls[0]["function"]
            arguments = function.get("arguments") or {}
            return tool_call_action(
                function["name"], json.loads(arguments) if isinstance(arguments, str) else arguments
            )
        return message["content"]

    def parse_reply(self, text: str) -> str:
        """A tool call (canonical JSON) if the reply holds one, else the reply's text (a final answer)."""
        candidates = [m.group(1) for m in _TOOL_CALL_RE.finditer(text)] or [text]
        for candidate in candidates:
            for obj in _json_objects(candidate):
                if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                    arguments = obj.get("arguments", obj.get("parameters", {}))
                    if isinstance(arguments, str):
                        try:
                            arguments = json.loads(arguments)
                        except ValueError:
                            continue
                    if isinstance(arguments, dict):
                        return tool_call_action(obj["name"], arguments)
        return text.strip() or "(no reply)"

    def tool_schemas(self) -> list[dict[str, Any]]:
        return self._schemas

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()
