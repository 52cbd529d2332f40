"""The explore stage of the authors' pipeline: roll the current policy out on training tasks and pair each expert
trajectory with a worse rollout of the same task, by ETO's rule.

`explore` samples `num_rollouts` trajectories per training variation with `dmpo_trl.envs.rollouts` (batched, at a
temperature, every observation the environment's reply after a replay from reset). `pair_with_experts` then applies
the rule of ETO's ``construct_preference.py`` (also `dmpo_trl.data.eto.pair_eto_rollouts`) to each rollout and the
expert (gold) trajectory of the same variation:

- rollout reward < expert reward ("lose"): chosen = expert, rejected = the rollout, capped at the expert's number of
  actions plus `max_extra_rejected_turns` (ETO: 5);
- rollout reward > expert reward ("win"): chosen = the rollout, rejected = the expert;
- equal rewards ("tie"): dropped and counted.

Rewards are final episode scores in ``[0, 1]``. Settings (the DMPO paper's two):

- ``"noisy"``: every pair the rule keeps, whatever the losing side did (failed, invalid or repeated actions): what
  an SFT policy's failures look like;
- ``"clean"``: only pairs whose losing side has no invalid and no immediately repeated action: valid but
  lower-scoring trajectories.

A rollout identical (same actions) to an earlier one of the same variation gives no second pair (counted as
``duplicate_dropped``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .base import AgentEnv, DMPOEnvError
from .pairs import SETTINGS, gold_trajectory
from .rollouts import Rollout, generate_rollouts
from .trajectory import Trajectory


__all__ = ["PAIR_STATS", "explore", "expert_trajectories", "pair_with_experts"]

PAIR_STATS = ("rollouts", "lose", "win", "tie_dropped", "duplicate_dropped", "not_clean_dropped", "rejected_capped")


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
    """`num_rollouts` sampled rollouts of the current policy on each training variation (see the module docstring)."""
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


def expert_trajectories(env: AgentEnv, variations: Iterable[int]) -> dict[int, Trajectory]:
    """The gold trajectory of every variation whose gold path solves it (the others are left out)."""
    experts = {}
    for variation in variations:
        try:
            experts[int(variation)] = gold_trajectory(env, int(variation))
        except DMPOEnvError:
            continue
    return experts


def _is_clean(traj: Trajectory) -> bool:
    return traj.num_invalid == 0 and traj.num_repeated == 0


def _capped(traj: Rollout, num_actions: int) -> Trajectory:
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
    """Preference rows (the project's format + metadata) from explored rollouts, and the counts of the rule.

    Rows carry the pair builder's metadata columns (``id``, ``env``, ``task``, ``variation``, ``setting``,
    ``chosen_reward``, ``rejected_reward``, ``*_num_turns``, ``*_success``, ``rejected_num_invalid``,
    ``rejected_num_repeated``) plus ``source`` (``"explore"``), ``outcome`` (``"lose"``/``"win"``), ``sample`` (the
    rollout's index) and ``round``. Rollouts of a variation without an expert trajectory raise `DMPOEnvError`.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    stats = dict.fromkeys(PAIR_STATS, 0)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, tuple[str, ...]]] = set()
    for rollout in rollouts:
        stats["rollouts"] += 1
        expert = experts.get(rollout.variation)
        if expert is None:
            raise DMPOEnvError(f"{env.describe()}: no expert trajectory for variation {rollout.variation}")
        key = (rollout.variation, tuple(rollout.actions))
        if key in seen:
            stats["duplicate_dropped"] += 1
            continue
        seen.add(key)
        reward, expert_reward = float(rollout.final_score), float(expert.final_score)
        if reward == expert_reward:
            stats["tie_dropped"] += 1
            continue
        if reward < expert_reward:
            outcome, chosen, rejected = "lose", expert, rollout
            if max_extra_rejected_turns is not None:
                cap = expert.num_turns + max_extra_rejected_turns
                if rollout.num_turns > cap:
                    stats["rejected_capped"] += 1
                    rejected = _capped(rollout, cap)
        else:
            outcome, chosen, rejected = "win", rollout, expert
        if setting == "clean" and not _is_clean(rejected):
            stats["not_clean_dropped"] += 1
            continue
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
                "chosen_success": chosen.success,
                "rejected_success": rejected.success,
                "rejected_num_invalid": rejected.num_invalid,
                "rejected_num_repeated": rejected.num_repeated,
                **({"tools": env.tool_schemas()} if env.tool_schemas() is not None else {}),
            }
        )
    return rows, stats
