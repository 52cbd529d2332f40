"""Losing trajectories, sampled by stepping the real environment.

Both samplers follow the gold path for a random number of actions ``k`` (``0 <= k < len(gold)``), so the agent
deviates before the task is solved, and then:

* **noisy** (the paper's noisy setting, like the failures of a weak agent): repeat the previous action or issue an
  action the environment does not understand (an unknown verb, an absent object, chatter instead of a command).
  At least one action is repeated or invalid.
* **clean**: valid, non-repeated actions other than the gold one (detours, wrong objects: moving away, taking or
  focusing on the wrong thing), until the episode ends in failure or the turn budget is spent. Look/inventory-style
  actions are used only when nothing else is possible.

A candidate action that would solve the task is taken back (the episode is replayed without it) and banned in that
state, so a losing trajectory never succeeds; so is, in the clean setting, a listed action the environment then
does not understand (ScienceWorld lists some that are ambiguous). Every observation comes from the environment.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from .base import AgentEnv, DMPOEnvError
from .trajectory import Trajectory, run_actions


__all__ = ["META_ACTIONS", "sample_clean", "sample_noisy"]

logger = logging.getLogger(__name__)

# Actions that change nothing in the world (used by the clean sampler only as a last resort).
META_ACTIONS = frozenset({"look around", "inventory", "task", "help", "wait", "wait1", "look"})

_UNKNOWN_VERBS = {
    "take": "grab",
    "move": "walk",
    "open": "unlock",
    "put": "place",
    "read": "study",
    "go": "run",
    "focus": "concentrate",
    "pick": "lift",
    "look": "peek",
    "close": "shut",
}
_ABSENT_OBJECTS = ("unicorn", "treasure chest", "golden key", "spaceship", "dragon")
_CHATTER = ("I should {a} next.", "Let me think about what to do.", "{a}, then check the result.")


def _invalid_action(rng: random.Random, valid: Sequence[str]) -> str:
    """An action the environment is unlikely to understand, derived from the currently valid ones."""
    base = rng.choice(list(valid)) if valid else "look around"
    verb, _, rest = base.partition(" ")
    kind = rng.randrange(3)
    if kind == 0:
        return f"{_UNKNOWN_VERBS.get(verb, 'fetch')} {rest or 'everything'}"
    if kind == 1:
        return f"{verb} {rng.choice(_ABSENT_OBJECTS)}"
    return rng.choice(_CHATTER).format(a=base)


def _prefix_len(rng: random.Random, gold: Sequence[str]) -> int:
    return rng.randrange(len(gold)) if gold else 0


def _take(env: AgentEnv, variation: int, traj: Trajectory, action: str, *, must_be_valid: bool = False) -> bool:
    """Step `action` and record it; if it solves the task (or, with `must_be_valid`, the environment does not
    understand it), undo it by replaying the trajectory without it and return False."""
    step = env.step(action)
    if step.success or (must_be_valid and not step.valid):
        logger.debug(
            "%s variation %s: taking back %r (%s)",
            env.describe(),
            variation,
            action,
            "solves the task" if step.success else f"rejected: {step.observation[:60]!r}",
        )
        replay = run_actions(env, variation, traj.actions)
        if replay.done:
            raise DMPOEnvError(
                f"{env.describe()} variation {variation}: replay ended early, the env is not deterministic"
            )
        return False
    traj.add(action, step)
    return True


def sample_noisy(env: AgentEnv, variation: int, gold: Sequence[str], rng: random.Random, max_turns: int) -> Trajectory:
    """Gold prefix, then repeated or invalid actions (at least one), never solving the task."""
    k = _prefix_len(rng, gold)
    traj = run_actions(env, variation, gold[:k])
    target = max(k + 1, rng.randint(k + 1, max(k + 1, max_turns)))
    tries = 0
    while traj.num_turns < target and not env.done and tries < 4 * max_turns:
        tries += 1
        can_repeat = traj.num_turns > 0
        if can_repeat and rng.random() < 0.5:
            action = traj.actions[-1]
        else:
            make_invalid = getattr(env, "invalid_action", None)  # environments with their own action syntax
            action = make_invalid(rng) if callable(make_invalid) else _invalid_action(rng, env.valid_actions())
        _take(env, variation, traj, action)
    if traj.num_invalid + traj.num_repeated == 0 or traj.num_turns <= k:
        raise DMPOEnvError(f"{env.describe()} variation {variation}: could not sample a noisy trajectory")
    return traj


def _deviation_point(env: AgentEnv, variation: int, gold: Sequence[str], rng: random.Random) -> tuple[int, Trajectory]:
    """A random gold prefix after which some non-meta, non-gold action is possible (any prefix if none is)."""
    order = list(range(len(gold))) if gold else [0]
    rng.shuffle(order)
    for k in order:
        traj = run_actions(env, variation, gold[:k])
        if any(a not in META_ACTIONS and a != gold[k] for a in env.valid_actions()):
            return k, traj
    return order[0], run_actions(env, variation, gold[: order[0]])


def sample_clean(env: AgentEnv, variation: int, gold: Sequence[str], rng: random.Random, max_turns: int) -> Trajectory:
    """Gold prefix, then valid, non-repeated, non-gold actions that do not solve the task."""
    k, traj = _deviation_point(env, variation, gold, rng)
    target = max(k + 1, rng.randint(k + 1, max(k + 1, max_turns)))
    banned: set[str] = {gold[k]} if k < len(gold) else set()
    while traj.num_turns < target and not env.done:
        previous = traj.actions[-1] if traj.actions else None
        valid = [a for a in env.valid_actions() if a != previous and a not in banned]
        candidates = [a for a in valid if a not in META_ACTIONS] or valid
        if not candidates:
            break
        action = rng.choice(candidates)
        if _take(env, variation, traj, action, must_be_valid=True):
            banned = set()
        else:
            banned.add(action)
    if traj.num_turns <= k:
        raise DMPOEnvError(
            f"{env.describe()} variation {variation}: no valid non-gold action to deviate with after {k} gold actions"
        )
    return traj
