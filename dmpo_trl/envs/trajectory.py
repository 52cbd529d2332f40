"""Trajectories recorded by actually stepping an environment, and their replay check."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

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

    def messages(self) -> list[dict[str, str]]:
        """The completion as messages: assistant action, user observation, assistant action, ..."""
        out: list[dict[str, str]] = []
        for action, step in zip(self.actions, self.steps, strict=True):
            out.append(action_message(action))
            out.append(observation_message(step.observation))
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
    `AgentEnv.same_observation`).

    Returns a list of differences (empty when every observation is what the environment replies now).
    """
    actions = [m["content"] for m in completion if m["role"] == "assistant"]
    observations = [m["content"] for m in completion if m["role"] != "assistant"]
    problems: list[str] = []
    if len(observations) != len(actions):
        problems.append(f"{len(actions)} actions but {len(observations)} observations")
    env.reset(variation)
    for t, (action, recorded) in enumerate(zip(actions, observations, strict=False)):
        if env.done:
            problems.append(f"turn {t}: the episode was already over before action {action!r}")
            break
        got = env.step(action).observation
        if not env.same_observation(got, recorded):
            problems.append(f"turn {t}: action {action!r} gave {got[:80]!r}, recorded {recorded[:80]!r}")
    return problems


def check_replay(env: AgentEnv, variation: int, completion: Sequence[dict], *, what: str = "trajectory") -> None:
    """Raise `DMPOEnvError` if replaying `completion` from the start does not reproduce its observations."""
    problems = replay_mismatches(env, variation, completion)
    if problems:
        raise DMPOEnvError(f"{env.describe()} variation {variation}: {what} does not replay: " + "; ".join(problems))
