"""Trajectories recorded by actually stepping an environment, and their replay check."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import AgentEnv, DMPOEnvError, EnvReset, EnvStep
from .prompting import action_message, observation_message


__all__ = ["Trajectory", "replay_mismatches", "run_actions"]


@dataclass
class Trajectory:
    """Actions taken from the start of an episode and what the environment replied to each."""

    start: EnvReset
    actions: list[str] = field(default_factory=list)
    steps: list[EnvStep] = field(default_factory=list)

    def add(self, action: str, step: EnvStep) -> None:
        self.actions.append(action)
        self.steps.append(step)

    @property
    def num_turns(self) -> int:
        return len(self.actions)

    @property
    def final_score(self) -> float:
        return self.steps[-1].score if self.steps else self.start.score

    @property
    def success(self) -> bool:
        return bool(self.steps and self.steps[-1].success)

    @property
    def done(self) -> bool:
        return bool(self.steps and self.steps[-1].done)

    @property
    def num_invalid(self) -> int:
        return sum(not s.valid for s in self.steps)

    @property
    def num_repeated(self) -> int:
        """Actions identical to the action right before them."""
        return sum(a == b for a, b in itertools.pairwise(self.actions))

    def messages(self, env: AgentEnv | None = None) -> list[dict[str, Any]]:
        """The completion as messages: assistant action, user observation, assistant action, ... (rendered by
        ``env.turn_messages`` when `env` is given, e.g. tool calls and tool results for a tool environment)."""
        out: list[dict[str, Any]] = []
        for action, step in zip(self.actions, self.steps, strict=True):
            if env is not None:
                out.extend(env.turn_messages(action, step))
            else:
                out += [action_message(action), observation_message(step.observation)]
        return out


def run_actions(env: AgentEnv, variation: int, actions: Sequence[str], *, stop_when_done: bool = True) -> Trajectory:
    """Reset `env` to `variation` and take `actions` in order (stopping at the end of the episode by default)."""
    traj = Trajectory(start=env.reset(variation))
    for action in actions:
        if stop_when_done and env.done:
            break
        traj.add(action, env.step(action))
    return traj


def replay_mismatches(env: AgentEnv, variation: int, completion: Sequence[dict]) -> list[str]:
    """Replay the actions of a recorded completion from the start and compare every observation (with
    `AgentEnv.same_observation`); the recorded messages must be what ``env.turn_messages`` renders.

    Returns a list of differences (empty when every observation is what the environment replies now).
    """
    actions = [env.action_of(m) for m in completion if m["role"] == "assistant"]
    problems: list[str] = []
    env.reset(variation)
    replayed: list[dict] = []
    for t, action in enumerate(actions):
        if env.done:
            problems.append(f"turn {t}: the episode was already over before action {action!r}")
            break
        replayed += env.turn_messages(action, env.step(action))
    if not problems and len(replayed) != len(completion):
        observations = sum(m["role"] != "assistant" for m in completion)
        problems.append(
            f"{len(actions)} actions but {observations} observations (replaying renders {len(replayed)} messages)"
        )
    t = -1
    for got, recorded in zip(replayed, completion, strict=False):
        if got["role"] == "assistant":
            t += 1
            continue
        if got["role"] != recorded["role"] or not env.same_observation(got["content"], recorded["content"]):
            problems.append(
                f"turn {t}: action {actions[t]!r} gave {got['content'][:80]!r}, recorded {recorded['content'][:80]!r}"
            )
    return problems


def check_replay(env: AgentEnv, variation: int, completion: Sequence[dict], *, what: str = "trajectory") -> None:
    """Raise `DMPOEnvError` if replaying `completion` from the start does not reproduce its observations."""
    problems = replay_mismatches(env, variation, completion)
    if problems:
        raise DMPOEnvError(f"{env.describe()} variation {variation}: {what} does not replay: " + "; ".join(problems))
