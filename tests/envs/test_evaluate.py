"""Evaluation: scripted policies give the known figures; HF models roll out (with and without cache) and log."""

from __future__ import annotations

import pytest

from dmpo_trl.envs import make_env
from dmpo_trl.envs.evaluate import EvalResult, GoldPolicy, HFPolicy, evaluate_model, evaluate_policy
from dmpo_trl.envs.prompting import parse_action
from dmpo_trl.testing import make_tokenizer, tiny_model
from tests.envs.toy_env import KeyDoorEnv


@pytest.mark.parametrize(
    "reply, action",
    [
        ("take coin", "take coin"),
        ("  Take coin.\n", "take coin"),
        ("Thought: the coin is here.\nAction: take coin", "take coin"),
        ("action: `move east`", "move east"),
        ('"open door"\nsome more text', "open door"),
        ("Thought: Action: first\nAction:   look   around  ", "look around"),
        ("", ""),
        ("\n\n", ""),
    ],
)
def test_parse_action(reply, action):
    assert parse_action(reply) == action


def garbage(messages):
    return "I am a banana."


def test_gold_policy_succeeds_everywhere_and_garbage_nowhere(twx):
    variations = twx.variations("test")[:8]
    gold = evaluate_policy(twx, GoldPolicy(), variations, max_steps=5, progress=False)
    assert gold.metrics() == {
        "success_rate": 1.0,
        "mean_score": 1.0,
        "mean_steps": pytest.approx(sum(len(e.actions) for e in gold.episodes) / 8),
        "invalid_action_rate": 0.0,
        "episodes": 8.0,
    }
    assert all(1 <= e.steps <= 2 for e in gold.episodes)
    bad = evaluate_policy(twx, garbage, variations, max_steps=4, progress=False)
    assert (bad.success_rate, bad.mean_score, bad.invalid_action_rate, bad.mean_steps) == (0.0, 0.0, 1.0, 4.0)


def test_gold_and_garbage_in_scienceworld():
    env = make_env("scienceworld", "lifespan-longest-lived")
    try:
        variations = env.variations("test")[:2]
        assert evaluate_policy(env, GoldPolicy(), variations, max_steps=20, progress=False).success_rate == 1.0
        bad = evaluate_policy(env, garbage, variations[:1], max_steps=3, progress=False)
        assert (bad.success_rate, bad.invalid_action_rate) == (0.0, 1.0)
    finally:
        env.close()


def test_partial_policy_figures():
    """A policy that solves every other episode: the figures are the averages over episodes and actions."""
    env = KeyDoorEnv()
    gold = GoldPolicy()

    class Half:
        def start_episode(self, env):
            gold.start_episode(env)
            self.good = env.variation % 2 == 0

        def __call__(self, messages):
            return gold(messages) if self.good else "Action: dance"

    result = evaluate_policy(env, Half(), [0, 1, 2, 3], max_steps=6, progress=False)
    assert result.success_rate == 0.5 and result.mean_score == 0.5
    assert result.mean_steps == (4 + 6 + 4 + 6) / 4
    assert result.invalid_action_rate == 12 / 20
    assert [e.success for e in result.episodes] == [True, False, True, False]
    assert EvalResult([]).success_rate == 0.0


def test_hf_policy_cache_gives_the_same_rollouts():
    tok = make_tokenizer("qwen2_5")
    model = tiny_model(tok, seed=1).eval()
    env = KeyDoorEnv()
    cached = evaluate_policy(env, HFPolicy(model, tok, max_new_tokens=6), [0, 1], max_steps=3, progress=False)
    plain = evaluate_policy(
        env, HFPolicy(model, tok, max_new_tokens=6, reuse_cache=False), [0, 1], max_steps=3, progress=False
    )
    assert [e.actions for e in cached.episodes] == [e.actions for e in plain.episodes]
    assert all(len(e.actions) == 3 for e in cached.episodes)  # a random model never solves it


def test_evaluate_model_restores_training_mode():
    tok = make_tokenizer("qwen2_5")
    model = tiny_model(tok).train()
    result = evaluate_model(model, tok, KeyDoorEnv(), [0], max_steps=2, max_new_tokens=4, progress=False)
    assert model.training and result.episodes[0].steps == 2


def test_hf_policy_needs_a_chat_template():
    import copy

    tok = make_tokenizer("qwen2_5")
    no_template = copy.deepcopy(tok)  # make_tokenizer is cached: do not modify its result
    no_template.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        HFPolicy(tiny_model(tok), no_template)
