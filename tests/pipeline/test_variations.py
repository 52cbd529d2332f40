"""Which variations the pipeline trains and evaluates on (`dmpo_trl.pipeline.stages.choose_variations`)."""

import pytest

from dmpo_trl.envs import make_env
from dmpo_trl.envs.explore import expert_trajectories
from dmpo_trl.pipeline.config import config_from_dict
from dmpo_trl.pipeline.stages import choose_variations


GAME_PARAMS = {"game_params": "numLocations=4,numDistractorItems=0,includeDoors=0"}


@pytest.fixture(scope="module")
def coin4():
    env = make_env("textworld-express", "coin", **GAME_PARAMS)
    yield env
    env.close()


def _cfg(**eval_settings):
    return config_from_dict(
        {
            "env": "textworld-express",
            "task": "coin",
            "env_kwargs": GAME_PARAMS,
            "sft": {"episodes": 8},
            "explore": {"episodes": 4},
            "eval": {"episodes": 12, **eval_settings},
        }
    )


def test_heldout_games_need_at_least_min_gold_steps(coin4):
    plain = choose_variations(coin4, _cfg())
    lengths = [t.num_turns for t in expert_trajectories(coin4, plain["heldout"]).values()]
    assert min(lengths) < 3  # without the filter, short games are drawn too (so the check below can fail)
    chosen = choose_variations(coin4, _cfg(min_gold_steps=3))
    assert len(chosen["heldout"]) == 12 and chosen["sft"] == plain["sft"]  # the training games do not move
    assert not set(chosen["heldout"]) & set(chosen["sft"])
    lengths = [t.num_turns for t in expert_trajectories(coin4, chosen["heldout"]).values()]
    assert len(lengths) == 12 and min(lengths) >= 3  # any draw is at least the shortest path
    assert choose_variations(coin4, _cfg(min_gold_steps=3)) == chosen  # seeded


def test_too_few_long_games_is_an_error_naming_the_setting(coin4):
    with pytest.raises(ValueError, match=r"need >= 60 gold actions.*eval.min_gold_steps"):
        choose_variations(coin4, _cfg(min_gold_steps=60))


def test_disjoint_explore_games_and_the_seen_set(coin4):
    cfg = config_from_dict(
        {
            "env": "textworld-express",
            "task": "coin",
            "env_kwargs": GAME_PARAMS,
            "sft": {"episodes": 8},
            "explore": {"episodes": 5, "games": "disjoint"},
            "eval": {"episodes": 6, "seen_episodes": 6, "min_gold_steps": 3},
        }
    )
    chosen = choose_variations(coin4, cfg)
    train = set(coin4.variations("train"))
    assert len(chosen["explore"]) == 5 and set(chosen["explore"]) <= train
    assert not set(chosen["explore"]) & set(chosen["sft"])
    assert len(chosen["seen"]) == 6 and set(chosen["seen"]) <= train
    assert not set(chosen["seen"]) & (set(chosen["sft"]) | set(chosen["explore"]))
    lengths = [t.num_turns for t in expert_trajectories(coin4, chosen["seen"]).values()]
    assert len(lengths) == 6 and min(lengths) >= 3  # the seen games are as long as the held-out ones
    same_games = choose_variations(coin4, _cfg())
    assert chosen["sft"] == same_games["sft"]  # the SFT games do not depend on the explore / seen settings
    assert choose_variations(coin4, cfg) == chosen
