"""Assertions shared by the environment tests: every recorded observation is what the environment replies.

Observations are compared with `env.same_observation`: exact equality, except for ScienceWorld, which lists some
objects in a different order from one reset to the next (tested in test_envs_errors.py).
"""

from __future__ import annotations

import itertools

from dmpo_trl.envs import AgentEnv


def actions_of(completion: list[dict]) -> list[str]:
    return [m["content"] for m in completion if m["role"] == "assistant"]


def assert_replays(env: AgentEnv, row: dict) -> dict[str, list]:
    """Reset to the row's episode and step each side's actions, comparing every observation with the recorded one.

    Returns the environment's step results per side.
    """
    steps = {}
    for side in ("chosen", "rejected"):
        completion = row[side]
        assert completion[0]["role"] == "assistant", f"{row['id']} {side} must start with an action"
        start = env.reset(row["variation"])
        # the prompt holds the task description and the first observation, verbatim
        assert row["prompt"][0]["role"] == "system" and row["prompt"][-1]["role"] == "user"
        task, _, first_obs = row["prompt"][-1]["content"].partition("\n\n")
        assert task == start.task_description.strip()
        assert env.same_observation(first_obs, start.observation.strip())
        roles = [m["role"] for m in completion]
        assert roles == ["assistant", "user"] * (len(completion) // 2), f"{row['id']} {side}: roles {roles}"
        results = []
        for action_msg, obs_msg in zip(completion[::2], completion[1::2], strict=False):
            assert not env.done, f"{row['id']} {side}: action {action_msg['content']!r} after the episode ended"
            step = env.step(action_msg["content"])
            assert env.same_observation(step.observation, obs_msg["content"]), (row["id"], side, action_msg["content"])
            results.append(step)
        assert len(results) == row[f"{side}_num_turns"]
        assert env.score == row[f"{side}_reward"]
        steps[side] = results
    return steps


def assert_pair_semantics(env: AgentEnv, row: dict) -> None:
    """Gold side succeeds; the losing side does not and scores lower; noisy/clean as defined."""
    steps = assert_replays(env, row)
    assert steps["chosen"][-1].success and row["chosen_success"] and row["chosen_reward"] == 1.0
    assert not any(s.success for s in steps["rejected"]) and not row["rejected_success"]
    assert row["rejected_reward"] < row["chosen_reward"]
    actions = actions_of(row["rejected"])
    repeats = sum(a == b for a, b in itertools.pairwise(actions))
    invalid = sum(not s.valid for s in steps["rejected"])
    assert (repeats, invalid) == (row["rejected_num_repeated"], row["rejected_num_invalid"])
    if row["setting"] == "noisy":
        assert repeats + invalid >= 1, f"{row['id']}: a noisy trajectory needs a repeated or invalid action"
    else:
        assert invalid == 0 and repeats == 0, f"{row['id']}: a clean trajectory has only valid, non-repeated actions"
    # the losing trajectory deviates from the gold path somewhere
    gold = actions_of(row["chosen"])
    assert actions[: len(gold)] != gold
