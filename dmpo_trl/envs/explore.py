"""The explore stage of the authors' pipeline: roll the current policy out on training tasks and pair each expert
trajectory with a worse rollout of the same task, by ETO's rule.

`explore` rolls the policy out `num_rollouts` times per training variation with `dmpo_trl.envs.rollouts` (batched,
every observation the environment's reply after a replay from reset): greedily with ``temperature=0`` and one rollout
per task, as the DMPO authors and ETO explore, or sampled at a temperature. `pair_with_experts` then applies ETO's
rule (`dmpo_trl.data.eto.eto_rule`, the one implementation, also behind `pair_eto_rollouts`) to each rollout and the
expert (gold) trajectory of the same variation:

- rollout reward < expert reward ("lose"): chosen = expert, rejected = the rollout, capped at the expert's number of
  actions plus `max_extra_rejected_turns` (ETO: 5);
- rollout reward > expert reward ("win"): chosen = the rollout, rejected = the expert;
- equal rewards ("tie"): dropped and counted.

Rewards are final episode scores in ``[0, 1]``. Settings (the DMPO paper's two):

- ``"noisy"``: the losing side as the rule leaves it, whatever it did (failed, invalid or repeated actions): what
  an SFT policy's failures look like;
- ``"clean"``: the losing side cut just before its first invalid or immediately repeated action (counted as
  ``rejected_cut``), then capped by the rule: the valid start of the failed rollout, however long it is.

A losing side that then holds no bad action is dropped (``no_bad_action_dropped``): a bad action is an invalid
action, an immediately repeated one, or one the expert's trajectory of the task does not contain (a wrong move, a
wrong object). Such a side (an empty cut, a prefix of the expert's path, the expert's actions in another order)
shows no mistake for the loss to push down. A pair whose (cut) sides equal an earlier pair's of the same variation
is dropped (``duplicate_dropped``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dmpo_trl.data.eto import eto_rule

from .base import AgentEnv, DMPOEnvError
from .pairs import SETTINGS, gold_trajectory
from .rollouts import Rollout, generate_rollouts
from .trajectory import Trajectory


__all__ = ["PAIR_STATS", "explore", "expert_trajectories", "pair_with_experts"]

PAIR_STATS = (
    "rollouts",
    "lose",
    "win",
    "tie_dropped",
    "duplicate_dropped",
    "no_bad_action_dropped",
    "rejected_cut",
    "rejected_capped",
)


def explore(
    model: Any,
    tokenizer: Any,
    env: AgentEnv,
    variations: Sequence[int],
    *,
    num_rollouts: int = 4,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_steps: int = 10,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    autocast_dtype: Any = None,
) -> list[Rollout]:
    """`num_rollouts` rollouts of the current policy on each training variation (see the module docstring):
    greedy with ``temperature=0`` (then `num_rollouts` must be 1: greedy rollouts of a task are all the same)."""
    if temperature == 0 and num_rollouts != 1:
        raise ValueError(
            f"greedy exploration (temperature 0) gives one rollout per task, got num_rollouts={num_rollouts}"
        )
    return generate_rollouts(
        model,
        tokenizer,
        env,
        variations,
        num_rollouts=num_rollouts,
        max_steps=max_steps,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc=f"explore {env.describe()} (T={temperature:g}, {num_rollouts}/task)",
        autocast_dtype=autocast_dtype,
    )


def expert_trajectories(env: AgentEnv, variations: Iterable[int], draws: int = 1) -> dict[int, Trajectory]:
    """The gold trajectory of every variation whose gold path solves it (the others are left out): with `draws` > 1
    the shortest of that many draws (the first of equal length), for environments that draw a random gold path at
    every reset (TextWorld-Express's gold agent walks rooms in a random order, back and forth)."""
    experts = {}
    for variation in variations:
        for _ in range(max(draws, 1)):
            try:
                traj = gold_trajectory(env, int(variation))
            except DMPOEnvError:
                break
            if int(variation) not in experts or traj.num_turns < experts[int(variation)].num_turns:
                experts[int(variation)] = traj
    return experts


def _first_bad(traj: Trajectory) -> int:
    """Index of the first invalid or immediately repeated action (``num_turns`` if there is none)."""
    for i, (action, step) in enumerate(zip(traj.actions, traj.steps, strict=True)):
        if not step.valid or (i > 0 and action == traj.actions[i - 1]):
            return i
    return traj.num_turns


def _has_bad_action(traj: Trajectory, expert: Trajectory) -> bool:
    return _first_bad(traj) < traj.num_turns or any(a not in set(expert.actions) for a in traj.actions)


def _cut(traj: Rollout, num_actions: int) -> Trajectory:
    return Trajectory(start=traj.start, actions=traj.actions[:num_actions], steps=traj.steps[:num_actions])


def pair_with_experts(
    env: AgentEnv,
    experts: dict[int, Trajectory],
    rollouts: Iterable[Rollout],
    *,
    setting: str = "noisy",
    max_extra_rejected_turns: int | None = 5,
    split: str = "train",
    round_index: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Preference rows (the project's format + metadata) from explored rollouts, and the counts of the rule
    (`PAIR_STATS`, see the module docstring).

    Rows carry the pair builder's metadata columns (``id``, ``env``, ``task``, ``variation``, ``setting``,
    ``chosen_reward``, ``rejected_reward``, ``*_num_turns``, ``*_success``, ``rejected_num_invalid``,
    ``rejected_num_repeated``) plus ``source`` (``"explore"``), ``outcome`` (``"lose"``/``"win"``), ``sample`` (the
    rollout's index), ``round`` and ``rollout_num_turns`` (the losing rollout's length before any cut). Rollouts of a
    variation without an expert trajectory raise `DMPOEnvError`.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    stats = dict.fromkeys(PAIR_STATS, 0)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, tuple[str, ...], tuple[str, ...]]] = set()
    for rollout in rollouts:
        stats["rollouts"] += 1
        expert = experts.get(rollout.variation)
        if expert is None:
            raise DMPOEnvError(f"{env.describe()}: no expert trajectory for variation {rollout.variation}")
        reward, expert_reward = float(rollout.final_score), float(expert.final_score)
        length = rollout.num_turns
        if setting == "clean" and reward < expert_reward and _first_bad(rollout) < length:
            stats["rejected_cut"] += 1
            length = _first_bad(rollout)
        outcome, kept = eto_rule(reward, expert_reward, length, expert.num_turns, max_extra_rejected_turns)
        if outcome == "tie":
            stats["tie_dropped"] += 1
            continue
        if outcome == "lose":
            stats["rejected_capped"] += kept < length
            chosen, rejected = expert, _cut(rollout, kept)
            if not _has_bad_action(rejected, expert):
                stats["no_bad_action_dropped"] += 1
                continue
        else:
            chosen, rejected = rollout, expert
        key = (rollout.variation, tuple(chosen.actions), tuple(rejected.actions))
        if key in seen:
            stats["duplicate_dropped"] += 1
            continue
        seen.add(key)
        stats[outcome] += 1
        rows.append(
            {
                "id": f"{env.env_name}/{env.task}/{rollout.variation}/explore-{setting}/r{round_index}/{rollout.sample}",
                "prompt": env.prompt_messages(expert.start),
                "chosen": chosen.messages(env),
                "rejected": rejected.messages(env),
                "env": env.env_name,
                "task": env.task,
                "variation": int(rollout.variation),
                "setting": setting,
                "split": split,
                "source": "explore",
                "outcome": outcome,
                "sample": int(rollout.sample),
                "round": int(round_index),
                "chosen_reward": max(reward, expert_reward),
                "rejected_reward": min(reward, expert_reward),
                "chosen_num_turns": chosen.num_turns,
                "rejected_num_turns": rejected.num_turns,
                "rollout_num_turns": rollout.num_turns,
                "chosen_success": chosen.success,
                "rejected_success": rejected.success,
                "rejected_num_invalid": rejected.num_invalid,
                "rejected_num_repeated": rejected.num_repeated,
                **({"tools": env.tool_schemas()} if env.tool_schemas() is not None else {}),
            }
        )
    return rows, stats
