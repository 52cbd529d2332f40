"""ScienceWorld adapter (`pip install scienceworld`; ships its jar, needs Java).

ScienceWorld (Wang et al., 2022) has 30 science tasks of elementary-school level, each with many variations split
into train/dev/test; it is one of the three benchmarks of the DMPO paper. It generates gold action sequences.

Defaults keep episodes short: the ``"easy"`` simplifications (teleport, open doors and containers, no electrical
actions where a task allows it) and tasks with short gold paths such as ``lifespan-longest-lived`` (4-8 actions)
or ``find-non-living-thing`` (3-7 actions).
"""

from __future__ import annotations

import re

from . import _jvm
from .base import AgentEnv, EnvReset, EnvStep, Split, UnknownTaskError


__all__ = ["SCIENCEWORLD_INVALID_PREFIXES", "ScienceWorldAgentEnv", "scienceworld_tasks"]

# The simulator's replies to actions it could not parse or resolve.
SCIENCEWORLD_INVALID_PREFIXES = ("No known action matches that input", "Unknown action", "Ambiguous request")

ACTION_HINT = (
    "Actions look like: look around, look at <obj>, look in <obj>, go to <location>, open/close <obj>, "
    "pick up <obj>, put down <obj>, move <obj> to <obj>, pour <obj> into <obj>, mix <obj>, read <obj>, "
    "use <obj> on <obj>, activate/deactivate <obj>, connect <obj> to <obj>, eat <obj>, focus on <obj>, wait1, "
    "inventory, task."
)


def _items(text: str) -> list[str]:
    return sorted(part.strip() for part in re.split(r"\n|, | and ", text) if part.strip())


def scienceworld_tasks() -> list[str]:
    """Names of the ScienceWorld tasks (read from the installed package, without starting Java)."""
    from scienceworld.constants import ID2TASK

    return sorted(set(ID2TASK.values()))


def _canonical_task(task: str) -> str:
    from scienceworld.utils import infer_task

    name = infer_task(task)
    known = scienceworld_tasks()
    if name not in known:
        raise UnknownTaskError(f"scienceworld has no task {task!r}; known tasks: {', '.join(known)}")
    return name


class ScienceWorldAgentEnv(AgentEnv):
    """One ScienceWorld task; `reset(variation)` loads that variation.

    Args:
        task: task name (``"lifespan-longest-lived"``), paper name or id (``"4-1"``), see `scienceworld_tasks()`.
        simplifications: the package's simplification string, ``"easy"`` by default (all simplifications).
        step_limit: the package's own step limit.

    Scores are normalised to ``[0, 1]`` (ScienceWorld reports ``0..100`` and ``-100`` when the task is failed,
    e.g. by focusing on the wrong object; that counts as ``0``). An ambiguous action (ScienceWorld asks which of
    several objects was meant) is treated as invalid: the adapter cancels the question right away, so the next
    action is read as an action, not as an answer to it. The simulator lists some objects in a varying order from
    one reset to the next; `same_observation` compares observations up to that order.

    Raises:
        UnknownTaskError: unknown task.
        JavaNotFoundError: no ``java`` on PATH.
        EnvCrashedError: the JVM failed to start or died.
    """

    env_name = "scienceworld"
    action_hint = ACTION_HINT

    def __init__(self, task: str = "lifespan-longest-lived", simplifications: str = "easy", *, step_limit: int = 100):
        super().__init__(_canonical_task(task))
        self.simplifications = simplifications
        self._raw = None
        self._splits: dict[str, list[int]] = {}
        self._loaded: int | None = None  # variation currently loaded in the simulator

        def factory():
            from scienceworld import ScienceWorldEnv

            return ScienceWorldEnv("", envStepLimit=step_limit)

        self._raw = _jvm.start("ScienceWorld", factory)

    def _reset(self, variation: int) -> EnvReset:
        with _jvm.guard(self.describe(), self._raw._gateway):
            if variation != self._loaded:  # loading (and planning the gold path) is slow; restarting is not
                max_var = self._raw.get_max_variations(self.task)
                if not 0 <= variation < max_var:
                    raise UnknownTaskError(f"{self.describe()} has variations 0..{max_var - 1}, got {variation}")
                self._loaded = None
                try:
                    self._raw.load(self.task, variation, self.simplifications, generateGoldPath=True)
                except ValueError as err:  # unknown simplification
                    raise UnknownTaskError(f"{self.describe()}: {err}") from err
                self._loaded = variation
            obs, infos = self._raw.reset()
            task_description = self._raw.get_task_description()
        return EnvReset(
            observation=obs,
            task_description=task_description,
            score=max(int(infos["score"]), 0) / 100.0,
            info={"variation": variation},
        )

    def _step(self, action: str) -> EnvStep:
        with _jvm.guard(self.describe(), self._raw._gateway):
            obs, _, done, infos = self._raw.step(action)
            if obs.startswith("Ambiguous request"):
                self._raw.step("")  # blank answer = cancel the question
        raw = int(infos["score"])
        return EnvStep(
            observation=obs,
            score=max(raw, 0) / 100.0,
            done=bool(done),
            success=raw >= 100,
            valid=not obs.startswith(SCIENCEWORLD_INVALID_PREFIXES),
            info={"raw_score": raw},
        )

    def same_observation(self, a: str, b: str) -> bool:
        """Equal up to the order of listed items: ScienceWorld enumerates some objects (e.g. several cups of paint)
        in a different order from one reset to the next, even for the same variation."""
        return a == b or _items(a) == _items(b)

    def valid_actions(self) -> list[str]:
        """Valid action-object combinations the simulator lists now (sorted; it omits no-ops like opening an
        open door, which it still accepts)."""
        with _jvm.guard(self.describe(), self._raw._gateway):
            return sorted(self._raw.get_valid_action_object_combinations())

    def gold_actions(self) -> list[str]:
        """The simulator's gold action sequence for the current variation."""
        if self.variation is None:
            raise RuntimeError("call reset(variation) before gold_actions()")
        with _jvm.guard(self.describe(), self._raw._gateway):
            return list(self._raw.get_gold_action_sequence())

    def variations(self, split: Split) -> list[int]:
        """Variation indices of a split, as defined by ScienceWorld (disjoint between splits)."""
        if split not in ("train", "dev", "test"):
            raise ValueError(f"split must be one of ['dev', 'test', 'train'], got {split!r}")
        if not self._splits:
            with _jvm.guard(self.describe(), self._raw._gateway):
                self._raw.load(self.task, 0, self.simplifications)  # the split lists need a loaded task
                self._splits = {
                    "train": sorted(int(v) for v in self._raw.get_variations_train()),
                    "dev": sorted(int(v) for v in self._raw.get_variations_dev()),
                    "test": sorted(int(v) for v in self._raw.get_variations_test()),
                }
            self._variation, self._done, self._loaded = None, True, None  # loading ended any running episode
        return list(self._splits[split])

    def close(self) -> None:
        """Stop the JVM."""
        _jvm.shutdown(self._raw)
        self._raw = None
