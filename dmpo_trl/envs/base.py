"""The environment interface: what an agent environment must provide to build preference pairs and to evaluate.

An environment is a text game: `reset(variation)` starts episode number `variation` (a game seed, a ScienceWorld
variation index, ...) and returns its first observation and task description; `step(action)` applies one action
(a plain string) and returns the next observation with the score so far. Implement `_reset`, `_step` and
`valid_actions` (and optionally `gold_actions` and `variations`) to plug in your own environment; the base class
keeps the bookkeeping (score, reward as change of score, done, success, number of steps) and the error rules.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .prompting import action_message, default_prompt, observation_message, parse_action


if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "AgentEnv",
    "DMPOEnvError",
    "EnvCrashedError",
    "EnvReset",
    "EnvStep",
    "JavaNotFoundError",
    "Split",
    "UnknownTaskError",
]

Split = Literal["train", "dev", "test"]


class DMPOEnvError(RuntimeError):
    """Base class of every environment problem raised by `dmpo_trl.envs` (the message says what to do)."""


class JavaNotFoundError(DMPOEnvError):
    """The environment runs on the JVM (TextWorld-Express, ScienceWorld) and no `java` executable was found."""


class UnknownTaskError(DMPOEnvError, ValueError):
    """The environment does not know the requested task (or game parameter); the message lists the known ones."""


class EnvCrashedError(DMPOEnvError):
    """The environment's process died or stopped answering; the environment object cannot be used any more."""


@dataclass(frozen=True)
class EnvReset:
    """What `AgentEnv.reset` returns: the first observation and the task description of the episode."""

    observation: str
    task_description: str
    score: float = 0.0
    """Score at the start (usually 0; some ScienceWorld tasks give credit for the starting state)."""
    info: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class EnvStep:
    """What `AgentEnv.step` returns.

    Attributes:
        observation: the environment's text reply to the action, verbatim.
        score: score of the episode after this action, normalised so that `1.0` means the task is solved.
        done: whether the episode is over (solved, failed, or the environment's own step limit reached).
        success: whether the task is solved.
        valid: whether the environment understood the action (`False` for unknown verbs, absent objects, ...).
        reward: change of score caused by this action (filled in by `AgentEnv.step`).
        info: anything else the environment reports (not used by the pair builder or the evaluation).
    """

    observation: str
    score: float
    done: bool
    success: bool
    valid: bool = True
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict, compare=False)


class AgentEnv(abc.ABC):
    """A text environment an agent acts in, one action string per step.

    Subclasses implement:

    * `_reset(variation) -> EnvReset`: start episode `variation` (deterministic: the same variation gives the same
      episode every time).
    * `_step(action) -> EnvStep`: apply `action`; `reward` is filled in by the base class.
    * `valid_actions() -> list[str]`: actions the environment accepts in the current state (may be a subset of
      what it understands, e.g. ScienceWorld does not list "open door" when the door is already open).
    * optionally `gold_actions()` (an expert action sequence for the current episode, needed to build pairs),
      `variations(split)` (episode ids of a split) and `close()`.

    Attributes:
        env_name: short name of the environment family (``"textworld-express"``, ``"scienceworld"``, ...).
        task: the task (game) this instance plays.
        action_hint: one or two lines describing the action syntax, put in the agent's system prompt.
    """

    env_name: ClassVar[str] = "custom"
    action_hint: str = ""

    def __init__(self, task: str):
        self.task = task
        self._score = 0.0
        self._done = True
        self._success = False
        self._num_steps = 0
        self._variation: int | None = None

    # ---- to implement ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _reset(self, variation: int) -> EnvReset:
        """Start episode `variation` and return its first observation and task description."""

    @abc.abstractmethod
    def _step(self, action: str) -> EnvStep:
        """Apply one action and return the environment's reply (`reward` is computed by `step`)."""

    @abc.abstractmethod
    def valid_actions(self) -> list[str]:
        """Actions the environment accepts in the current state."""

    def gold_actions(self) -> list[str]:
        """An expert action sequence that solves the current episode from its start (for the pair builder)."""
        raise NotImplementedError(f"{type(self).__name__} provides no gold (expert) actions")

    def variations(self, split: Split) -> list[int]:
        """Episode ids of a split (`"train"`, `"dev"`, `"test"`), disjoint between splits."""
        raise NotImplementedError(f"{type(self).__name__} does not define train/dev/test variations")

    def close(self) -> None:  # noqa: B027 (optional hook: most environments hold nothing to release)
        """Release the environment's resources (processes, files)."""

    # ---- conversation format (defaults: `dmpo_trl.envs.prompting`; tool-calling environments override them) -----
    def prompt_messages(self, start: EnvReset) -> list[dict[str, Any]]:
        """The prompt of an episode (default: system rules + task and first observation, `prompting.default_prompt`)."""

        return default_prompt(self, start)

    def turn_messages(self, action: str, step: EnvStep) -> list[dict[str, Any]]:
        """The messages of one turn: the assistant action, then the environment's reply (default: an assistant
        message whose content is the action, a user message whose content is the observation)."""

        return [action_message(action), observation_message(step.observation)]

    def action_of(self, message: dict[str, Any]) -> str:
        """The action string of a recorded assistant message (default: its content); inverse of `turn_messages`."""
        return message["content"]

    def parse_reply(self, text: str) -> str:
        """The action a model reply stands for (default: `prompting.parse_action`)."""

        return parse_action(text)

    def tool_schemas(self) -> list[dict[str, Any]] | None:
        """JSON-schema tool definitions given to the chat template (``None``: a plain text environment)."""
        return None

    def same_observation(self, a: str, b: str) -> bool:
        """Whether two replies are the same observation (exact equality; environments that list objects in an
        arbitrary order, like ScienceWorld, compare up to that order)."""
        return a == b

    # ---- provided ----------------------------------------------------------------------------------------------
    def reset(self, variation: int) -> EnvReset:
        """Start episode `variation`; returns its first observation and task description."""
        result = self._reset(int(variation))
        self._variation = int(variation)
        self._score, self._done, self._success, self._num_steps = result.score, False, False, 0
        return result

    def step(self, action: str) -> EnvStep:
        """Apply `action` (a plain string); returns the observation, score, reward, done and success.

        Raises:
            DMPOEnvError: the episode is over (or was never started): call `reset` first.
        """
        if self._variation is None:
            raise DMPOEnvError(f"{self.describe()}: call reset(variation) before step()")
        if self._done:
            raise DMPOEnvError(f"{self.describe()}: the episode is over (done); call reset(variation) to start again")
        result = self._step(action)
        reward = result.score - self._score
        self._score, self._done, self._success = result.score, result.done, result.success
        self._num_steps += 1
        return EnvStep(
            observation=result.observation,
            score=result.score,
            done=result.done,
            success=result.success,
            valid=result.valid,
            reward=reward,
            info=result.info,
        )

    @property
    def score(self) -> float:
        """Score of the current episode so far (`1.0` = solved)."""
        return self._score

    @property
    def done(self) -> bool:
        """Whether the current episode is over."""
        return self._done

    @property
    def success(self) -> bool:
        """Whether the current episode's task is solved."""
        return self._success

    @property
    def num_steps(self) -> int:
        """Number of actions taken since the last reset."""
        return self._num_steps

    @property
    def variation(self) -> int | None:
        """The episode id passed to the last `reset` (``None`` before the first one)."""
        return self._variation

    def describe(self) -> str:
        """`"<env>/<task>"`, for messages."""
        return f"{self.env_name}/{self.task}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
