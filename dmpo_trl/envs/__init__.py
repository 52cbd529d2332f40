"""Text environments for agent data and evaluation.

* `AgentEnv` (in `base`): the interface; implement it for your own environment.
* `TextWorldExpressAgentEnv`, `ScienceWorldAgentEnv`: adapters for the two PyPI environments (need Java).
* `make_env(env, task, **kwargs)`: build an adapter by name.
* `dmpo_trl.envs.pairs`: preference pairs (gold vs. noisy/clean losing trajectories) from real episodes.
* `dmpo_trl.envs.evaluate`: roll a model out for held-out episodes (success rate, score, steps, invalid actions).

The adapters import their packages lazily, so importing this module needs neither package nor Java.
"""

from __future__ import annotations

from typing import Any

from .base import (
    AgentEnv,
    DMPOEnvError,
    EnvCrashedError,
    EnvReset,
    EnvStep,
    JavaNotFoundError,
    UnknownTaskError,
)


__all__ = [
    "ENV_NAMES",
    "AgentEnv",
    "DMPOEnvError",
    "EnvCrashedError",
    "EnvReset",
    "EnvStep",
    "JavaNotFoundError",
    "UnknownTaskError",
    "default_task",
    "make_env",
]

ENV_NAMES = ("textworld-express", "scienceworld")
_DEFAULT_TASKS = {"textworld-express": "coin", "scienceworld": "lifespan-longest-lived"}
_ALIASES = {"twx": "textworld-express", "textworld_express": "textworld-express", "sciworld": "scienceworld"}


def _canonical(env: str) -> str:
    name = _ALIASES.get(env.lower(), env.lower())
    if name not in ENV_NAMES:
        raise UnknownTaskError(f"unknown environment {env!r}; known environments: {', '.join(ENV_NAMES)}")
    return name


def default_task(env: str) -> str:
    """The task used when none is named (short episodes): ``coin`` / ``lifespan-longest-lived``."""
    return _DEFAULT_TASKS[_canonical(env)]


def make_env(env: str, task: str | None = None, **kwargs: Any) -> AgentEnv:
    """Build an environment adapter by name.

    Args:
        env: ``"textworld-express"`` (alias ``"twx"``) or ``"scienceworld"`` (alias ``"sciworld"``).
        task: the game/task; ``None`` picks `default_task(env)`.
        **kwargs: passed to the adapter (``game_params=`` for TextWorld-Express, ``simplifications=`` for
            ScienceWorld, ``step_limit=`` for both).
    """
    name = _canonical(env)
    task = task or _DEFAULT_TASKS[name]
    if name == "textworld-express":
        # optional: the environment's package is an extra
        from .textworld_express import TextWorldExpressAgentEnv

        return TextWorldExpressAgentEnv(task, **kwargs)
    # optional: the environment's package is an extra
    from .scienceworld import ScienceWorldAgentEnv

    return ScienceWorldAgentEnv(task, **kwargs)
