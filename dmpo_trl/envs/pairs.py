"""Preference pairs of whole trajectories from a real environment.

Each row is in the project's dataset format (`prompt` / `chosen` / `rejected` conversations, see
`dmpo_trl.envs.prompting` for the message format) plus metadata columns:

``id, env, task, variation, seed, setting, split, chosen_reward, rejected_reward, chosen_num_turns,
rejected_num_turns, chosen_success, rejected_success, rejected_num_invalid, rejected_num_repeated``

* chosen: the environment's gold (expert) action sequence, stepped until the episode ends (it must succeed);
* rejected: a losing trajectory sampled by `dmpo_trl.envs.rejected` in the ``"noisy"`` setting (repeated or
  invalid actions) or the ``"clean"`` setting (valid but suboptimal actions); it never solves the task.

Every observation is the environment's reply to the recorded action (rewards are final episode scores in
``[0, 1]``). ``variation`` is the episode id (a TextWorld-Express game seed, a ScienceWorld variation); ``seed`` is
the sampling seed of the builder. The same arguments give the same rows.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tqdm.auto import tqdm

from .base import AgentEnv, DMPOEnvError, Split
from .prompting import build_prompt
from .rejected import sample_clean, sample_noisy
from .trajectory import Trajectory, run_actions


__all__ = ["PairSplits", "Setting", "build_pairs", "build_splits", "gold_trajectory"]

logger = logging.getLogger(__name__)

Setting = Literal["noisy", "clean"]
SETTINGS: tuple[str, ...] = ("noisy", "clean")


def gold_trajectory(env: AgentEnv, variation: int) -> Trajectory:
    """Step the gold actions of `variation` until the episode ends; raise `DMPOEnvError` if it does not succeed."""
    env.reset(variation)
    gold = env.gold_actions()
    traj = run_actions(env, variation, gold)
    if not traj.success:
        raise DMPOEnvError(
            f"{env.describe()} variation {variation}: the gold path ({len(gold)} actions) does not solve the task "
            f"(score {traj.final_score:.2f})"
        )
    return traj


def _rng(seed: int, env: AgentEnv, variation: int, setting: str, index: int) -> random.Random:
    # str seeds hash with SHA-512 in `random`, independent of PYTHONHASHSEED: same arguments, same samples.
    return random.Random(f"{seed}:{env.env_name}:{env.task}:{variation}:{setting}:{index}")


def build_pairs(
    env: AgentEnv,
    variations: Sequence[int],
    *,
    setting: Setting = "noisy",
    seed: int = 0,
    pairs_per_variation: int = 1,
    max_extra_turns: int = 2,
    split: str | None = None,
    skip_failed_gold: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Build preference pairs for the given episodes.

    Args:
        env: the environment (must implement `gold_actions`).
        variations: episode ids to use.
        setting: ``"noisy"`` or ``"clean"`` losing trajectories.
        seed: sampling seed (the rows are a deterministic function of all arguments).
        pairs_per_variation: losing trajectories sampled per episode (each pairs with the gold one).
        max_extra_turns: a losing trajectory has at most ``len(gold) + max_extra_turns`` actions.
        split: value of the ``split`` column.
        skip_failed_gold: skip (with a warning) episodes whose gold path does not succeed instead of raising.
        progress: show a progress bar.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if pairs_per_variation < 1:
        raise ValueError(f"pairs_per_variation must be >= 1, got {pairs_per_variation}")
    sampler = sample_noisy if setting == "noisy" else sample_clean
    rows: list[dict[str, Any]] = []
    for variation in tqdm(list(variations), desc=f"pairs {env.describe()} ({setting})", disable=not progress):
        try:
            chosen = gold_trajectory(env, variation)
        except DMPOEnvError as err:
            if not skip_failed_gold:
                raise
            logger.warning("skipping: %s", err)
            continue
        prompt = build_prompt(env, chosen.start)
        for index in range(pairs_per_variation):
            rng = _rng(seed, env, variation, setting, index)
            rejected = sampler(env, variation, chosen.actions, rng, len(chosen.actions) + max_extra_turns)
            rows.append(_row(env, variation, seed, setting, split, index, prompt, chosen, rejected))
    return rows


def _row(env, variation, seed, setting, split, index, prompt, chosen: Trajectory, rejected: Trajectory) -> dict:
    return {
        "id": f"{env.env_name}/{env.task}/{variation}/{setting}/{index}",
        "prompt": prompt,
        "chosen": chosen.messages(env),
        "rejected": rejected.messages(env),
        "env": env.env_name,
        "task": env.task,
        "variation": int(variation),
        "seed": int(seed),
        "setting": setting,
        "split": split,
        "chosen_reward": float(chosen.final_score),
        "rejected_reward": float(rejected.final_score),
        "chosen_num_turns": chosen.num_turns,
        "rejected_num_turns": rejected.num_turns,
        "chosen_success": chosen.success,
        "rejected_success": rejected.success,
        "rejected_num_invalid": rejected.num_invalid,
        "rejected_num_repeated": rejected.num_repeated,
        **({"tools": env.tool_schemas()} if env.tool_schemas() is not None else {}),
    }


@dataclass
class PairSplits:
    """Train pairs and held-out pairs from disjoint sets of episodes."""

    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    train_variations: list[int]
    heldout_variations: list[int]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dataset_dict(self):
        """A `datasets.DatasetDict` with splits ``train`` and ``heldout``."""
        from .io import to_dataset_dict  # lazy: loads pyarrow; `dmpo-trl --help` imports this module

        return to_dataset_dict({"train": self.train, "heldout": self.heldout})


def build_splits(
    env: AgentEnv,
    *,
    num_train: int,
    num_heldout: int,
    setting: Setting = "noisy",
    seed: int = 0,
    train_split: Split = "train",
    heldout_split: Split = "test",
    progress: bool = True,
    **kwargs: Any,
) -> PairSplits:
    """Pairs for `num_train` training episodes and `num_heldout` held-out episodes.

    Episodes are drawn (deterministically from `seed`) from the environment's own splits, `train_split` and
    `heldout_split`, which never share an episode; building checks that too. Episodes whose gold path fails are
    skipped with a warning and counted in ``info["skipped"]``. Other keyword arguments go to `build_pairs`.
    """
    if train_split == heldout_split:
        raise ValueError("train_split and heldout_split must differ (held-out episodes must be unseen)")
    rng = random.Random(f"{seed}:{env.env_name}:{env.task}:splits")
    pools = {name: env.variations(name) for name in (train_split, heldout_split)}
    chosen_vars = {}
    for name, n in ((train_split, num_train), (heldout_split, num_heldout)):
        if n > len(pools[name]):
            raise ValueError(f"{env.describe()} has {len(pools[name])} {name} episodes, asked for {n}")
        chosen_vars[name] = sorted(rng.sample(pools[name], n))
    train_vars, heldout_vars = chosen_vars[train_split], chosen_vars[heldout_split]
    overlap = set(train_vars) & set(heldout_vars)
    if overlap:
        raise DMPOEnvError(f"{env.describe()}: train and held-out episodes overlap: {sorted(overlap)}")
    common = dict(setting=setting, seed=seed, skip_failed_gold=True, progress=progress, **kwargs)
    train = build_pairs(env, train_vars, split="train", **common)
    heldout = build_pairs(env, heldout_vars, split="heldout", **common)
    used = {r["variation"] for r in train}, {r["variation"] for r in heldout}
    skipped = sorted(set(train_vars) - used[0]) + sorted(set(heldout_vars) - used[1])
    return PairSplits(
        train=train,
        heldout=heldout,
        train_variations=train_vars,
        heldout_variations=heldout_vars,
        info={"setting": setting, "seed": seed, "skipped": skipped},
    )
