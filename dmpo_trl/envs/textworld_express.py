"""TextWorld-Express adapter (`pip install textworld-express`; needs Java).

TextWorld-Express (Jansen & Côté, 2022) simulates small text games thousands of times faster than TextWorld:
``coin`` (find and take a coin), ``mapreader`` (fetch a coin using a map), ``sorting`` (put objects in a box by
quantity), ``arithmetic`` (solve a sum, put the matching object in a box), ``cookingworld``, ``twc`` (tidy up),
``simonsays``, ``peckingorder``. It generates gold (expert) action paths.

Variations are the package's game seeds: train seeds ``0..999``, dev ``10000..10999``, test ``20000..20999``
(the fold is inferred from the seed, so a variation always names the same game).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _jvm
from .base import AgentEnv, EnvReset, EnvStep, Split, UnknownTaskError


__all__ = ["DEFAULT_GAME_PARAMS", "TEXTWORLD_EXPRESS_TASKS", "TextWorldExpressAgentEnv"]

TEXTWORLD_EXPRESS_TASKS = (
    "coin",
    "mapreader",
    "sorting",
    "arithmetic",
    "cookingworld",
    "twc",
    "simonsays",
    "peckingorder",
)

# Small worlds by default: few rooms, no doors, no distractors -> short gold paths and short observations.
DEFAULT_GAME_PARAMS: dict[str, str] = {
    "coin": "numLocations=2,numDistractorItems=0,includeDoors=0",
    "mapreader": "numLocations=3,maxDistanceApart=1,includeDoors=0,maxDistractorItemsPerLocation=0",
    "cookingworld": "numLocations=1,numIngredients=1,numDistractorItems=0,includeDoors=0,limitInventorySize=0",
    "twc": "numLocations=1,numItemsToPutAway=1,includeDoors=0,limitInventorySize=0",
    "sorting": "",
    "arithmetic": "",
    "simonsays": "",
    "peckingorder": "",
}

_ACTION_HINTS = {
    "coin": "look around, inventory, move <north|south|east|west>, open <door>, take <object>",
    "mapreader": "look around, inventory, task, read map, move <direction>, open <door>, take <object>, "
    "put <object> in <container>",
    "sorting": "look around, inventory, take <object>, put <object> in <container>",
    "arithmetic": "look around, inventory, take <object>, read <object>, put <object> in <container>",
    "cookingworld": "look around, inventory, move <direction>, open/close <object>, take <object>, read <object>, "
    "slice/dice/chop <object>, cook <object> in <appliance>, prepare meal, eat meal",
    "twc": "look around, inventory, move <direction>, open/close <object>, take <object>, "
    "put <object> in/on <container>",
}

_FOLDS: tuple[tuple[Split, int, int], ...] = (("train", 0, 10000), ("dev", 10000, 20000), ("test", 20000, 1 << 31))


def _fold_of(seed: int) -> Split:
    for fold, lo, hi in _FOLDS:
        if lo <= seed < hi:
            return fold
    raise ValueError(f"TextWorld-Express seeds are non-negative integers, got {seed}")


def _params_str(params: str | Mapping[str, Any] | None, task: str) -> str:
    if params is None:
        return DEFAULT_GAME_PARAMS.get(task, "")
    if isinstance(params, Mapping):
        return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in params.items())
    return str(params)


class TextWorldExpressAgentEnv(AgentEnv):
    """One TextWorld-Express game (task) with small default parameters.

    Args:
        task: game name, one of `TEXTWORLD_EXPRESS_TASKS`.
        game_params: the package's game parameters as ``"numLocations=2,includeDoors=0"`` or a dict; ``None`` uses
            `DEFAULT_GAME_PARAMS` (small worlds, short gold paths).
        skip_initial_look: drop a leading ``look around`` from the gold path (the first observation already is what
            it would print), which shortens every trajectory by one turn.
        step_limit: the package's own step limit (the episode ends after this many actions).
        gold_samples: how many of the package's gold paths to draw per game, keeping the shortest (first among equals).
            In games with several rooms (``coin`` with ``numLocations > 2``, ...) the package generates its gold path
            with an unseeded random search: the same game gives different paths at every reset and in every process
            (here `coin` in 4 rooms, game 20193, five resets: 4, 8, 2, 2 and 14 actions), some of them long detours.
            Drawing several and keeping the shortest gives shorter, steadier expert paths; none of this makes them
            reproducible, so store the expert trajectories you train on (the pipeline does).

    Raises:
        UnknownTaskError: unknown game or game parameter.
        JavaNotFoundError: no ``java`` on PATH.
        EnvCrashedError: the JVM failed to start or died.
    """

    env_name = "textworld-express"

    def __init__(
        self,
        task: str = "coin",
        game_params: str | Mapping[str, Any] | None = None,
        *,
        skip_initial_look: bool = True,
        step_limit: int = 100,
        gold_samples: int = 1,
    ):
        if task not in TEXTWORLD_EXPRESS_TASKS:
            raise UnknownTaskError(
                f"textworld-express has no task {task!r}; known tasks: {', '.join(TEXTWORLD_EXPRESS_TASKS)}"
            )
        super().__init__(task)
        self.game_params = _params_str(game_params, task)
        self.skip_initial_look = skip_initial_look
        if gold_samples < 1:
            raise ValueError(f"gold_samples must be >= 1, got {gold_samples}")
        self.gold_samples = int(gold_samples)
        self.action_hint = f"Actions look like: {_ACTION_HINTS.get(task, 'look around, take <object>, ...')}."
        self._raw = None
        self._valid: list[str] = []

        def factory():
            from textworld_express import TextWorldExpressEnv

            return TextWorldExpressEnv(envStepLimit=step_limit)

        self._raw = _jvm.start("TextWorld-Express", factory)
        try:
            with _jvm.guard(self.describe(), self._raw._gateway):
                self._raw.load(task, self.game_params)
        except ValueError as err:  # unknown game parameter
            self.close()
            raise UnknownTaskError(f"textworld-express/{task}: {str(err).strip()}") from err

    def _reset(self, variation: int) -> EnvReset:
        with _jvm.guard(self.describe(), self._raw._gateway):
            obs, infos = self._raw.reset(seed=variation, gameFold=_fold_of(variation), generateGoldPath=True)
        self._valid = list(infos["validActions"])
        return EnvReset(observation=obs, task_description=infos["taskDescription"], info={"seed": variation})

    def _step(self, action: str) -> EnvStep:
        valid = action.strip() in self._valid
        with _jvm.guard(self.describe(), self._raw._gateway):
            obs, _, done, infos = self._raw.step(action)
        self._valid = list(infos["validActions"])
        score = float(infos["score"])
        return EnvStep(
            observation=obs,
            score=max(score, 0.0),
            done=bool(done),
            success=bool(infos["tasksuccess"]),
            valid=valid,
            info={"raw_score": score, "task_failure": bool(infos["taskfailure"])},
        )

    def valid_actions(self) -> list[str]:
        """The actions the game accepts now (sorted, so that sampling from them is deterministic)."""
        return sorted(self._valid)

    def gold_actions(self) -> list[str]:
        """The package's gold path for the current game (without a leading ``look around`` by default); with
        ``gold_samples > 1`` the shortest of that many draws, and the game is back at its start afterwards."""
        if self.variation is None:
            raise RuntimeError("call reset(variation) before gold_actions()")
        best: list[str] | None = None
        with _jvm.guard(self.describe(), self._raw._gateway):
            for draw in range(self.gold_samples):
                if draw:  # a new draw of the package's (randomised) gold path for the same game
                    _, infos = self._raw.reset(
                        seed=self.variation, gameFold=_fold_of(self.variation), generateGoldPath=True
                    )
                    self._valid = list(infos["validActions"])
                gold = list(self._raw.getGoldActionSequence())
                if self.skip_initial_look and gold[:1] == ["look around"]:
                    gold = gold[1:]
                if best is None or len(gold) < len(best):
                    best = gold
        if self.gold_samples > 1:
            self.reset(self.variation)  # the episode restarts (bookkeeping included)
        return best

    def variations(self, split: Split) -> list[int]:
        """Game seeds of a split (train ``0..999``, dev ``10000..10999``, test ``20000..20999``)."""
        getters = {
            "train": self._raw.getValidSeedsTrain,
            "dev": self._raw.getValidSeedsDev,
            "test": self._raw.getValidSeedsTest,
        }
        if split not in getters:
            raise ValueError(f"split must be one of {sorted(getters)}, got {split!r}")
        with _jvm.guard(self.describe(), self._raw._gateway):
            return sorted(int(s) for s in getters[split]())

    def close(self) -> None:
        """Stop the JVM."""
        _jvm.shutdown(self._raw)
        self._raw = None
