"""Preference pairs from real environments: every observation is the environment's, gold wins, splits are disjoint."""

from __future__ import annotations

import pytest

from dmpo_trl.data.io import read_records as read_jsonl
from dmpo_trl.envs import DMPOEnvError, make_env
from dmpo_trl.envs.io import save_jsonl_splits, to_dataset_dict
from dmpo_trl.envs.pairs import build_pairs, build_splits
from dmpo_trl.envs.trajectory import check_replay, replay_mismatches
from tests.envs.checks import assert_pair_semantics
from tests.envs.toy_env import KeyDoorEnv


@pytest.mark.parametrize("setting", ["noisy", "clean"])
def test_textworld_express_pairs_replay_and_gold_wins(twx, setting):
    splits = build_splits(twx, num_train=8, num_heldout=4, setting=setting, seed=3, progress=False)
    assert len(splits.train) == 8 and len(splits.heldout) == 4
    assert not set(splits.train_variations) & set(splits.heldout_variations)
    # TextWorld-Express splits by game seed: train seeds < 10000, test seeds >= 20000
    assert max(splits.train_variations) < 10000 and min(splits.heldout_variations) >= 20000
    for row in splits.train + splits.heldout:
        assert row["env"] == "textworld-express" and row["task"] == "coin" and row["setting"] == setting
        assert_pair_semantics(twx, row)


@pytest.mark.parametrize("task", ["sorting", "arithmetic", "mapreader"])
def test_other_textworld_express_games(task):
    env = make_env("twx", task)
    try:
        for setting in ("noisy", "clean"):
            rows = build_pairs(env, env.variations("train")[:2], setting=setting, seed=0, progress=False)
            for row in rows:
                assert_pair_semantics(env, row)
    finally:
        env.close()


@pytest.mark.parametrize("setting", ["noisy", "clean"])
def test_scienceworld_pairs_replay_and_gold_wins(sciworld, setting):
    splits = build_splits(sciworld, num_train=2, num_heldout=1, setting=setting, seed=0, progress=False)
    assert not set(splits.train_variations) & set(splits.heldout_variations)
    assert set(splits.train_variations) <= set(sciworld.variations("train"))
    assert set(splits.heldout_variations) <= set(sciworld.variations("test"))
    for row in splits.train + splits.heldout:
        assert row["env"] == "scienceworld"
        assert_pair_semantics(sciworld, row)


def test_same_seed_same_pairs_other_seed_other_pairs(twx):
    a = build_splits(twx, num_train=6, num_heldout=2, seed=11, progress=False)
    b = build_splits(twx, num_train=6, num_heldout=2, seed=11, progress=False)
    c = build_splits(twx, num_train=6, num_heldout=2, seed=12, progress=False)
    assert a.train == b.train and a.heldout == b.heldout
    assert a.train_variations != c.train_variations or a.train != c.train


def test_custom_environment_pairs_and_splits():
    env = KeyDoorEnv()
    splits = build_splits(
        env, num_train=5, num_heldout=3, setting="clean", seed=0, pairs_per_variation=2, progress=False
    )
    assert len(splits.train) == 10 and len(splits.heldout) == 6
    assert {r["split"] for r in splits.train} == {"train"} and {r["split"] for r in splits.heldout} == {"heldout"}
    for row in splits.train + splits.heldout:
        assert_pair_semantics(env, row)
    assert len({r["id"] for r in splits.train}) == 10


def test_tampered_observation_is_detected(twx):
    row = build_pairs(twx, [5], seed=0, progress=False)[0]
    assert replay_mismatches(twx, row["variation"], row["rejected"]) == []
    row["chosen"][1] = {"role": "user", "content": "You see a dragon."}
    assert replay_mismatches(twx, row["variation"], row["chosen"])
    with pytest.raises(DMPOEnvError, match="does not replay"):
        check_replay(twx, row["variation"], row["chosen"])


def test_writes_jsonl_and_dataset(tmp_path):
    env = KeyDoorEnv()
    splits = build_splits(env, num_train=3, num_heldout=2, seed=0, progress=False)
    paths = save_jsonl_splits({"train": splits.train, "heldout": splits.heldout}, tmp_path)
    assert read_jsonl(paths["train"]) == splits.train
    dd = to_dataset_dict({"train": splits.train, "heldout": splits.heldout})
    assert dd["train"].num_rows == 3 and dd["heldout"][0]["chosen"] == splits.heldout[0]["chosen"]
    assert {"prompt", "chosen", "rejected", "chosen_reward", "rejected_num_turns", "variation"} <= set(
        dd["train"].column_names
    )


def test_pairs_train_with_the_tokenizer_alignment():
    """The rows are in the project's format: every action is found token-exactly by the core tokenizer."""
    from dmpo_trl.core.rows.tokenization import tokenize_pair
    from dmpo_trl.testing import make_tokenizer

    env = KeyDoorEnv()
    tok = make_tokenizer("qwen2_5")
    for row in build_pairs(env, [0, 1], setting="noisy", seed=0, progress=False):
        out = tokenize_pair(tok, row)
        assert out["chosen_num_turns"] == row["chosen_num_turns"]
        assert out["rejected_num_turns"] == row["rejected_num_turns"]


def test_bad_arguments():
    env = KeyDoorEnv()
    with pytest.raises(ValueError, match="setting"):
        build_pairs(env, [0], setting="messy")
    with pytest.raises(ValueError, match="must differ"):
        build_splits(env, num_train=2, num_heldout=2, train_split="train", heldout_split="train")
    with pytest.raises(ValueError, match="asked for 99"):
        build_splits(env, num_train=2, num_heldout=99)
