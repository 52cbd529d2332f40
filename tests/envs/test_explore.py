"""Explore stage: batched rollouts record only real observations, match sequential decoding, and pair with the
expert trajectories by ETO's rule (the same decisions as the ETO converter)."""

import pytest

from dmpo_trl.data.eto import pair_eto_rollouts
from dmpo_trl.envs.evaluate import HFPolicy, evaluate_policy
from dmpo_trl.envs.explore import expert_trajectories, explore, pair_with_experts
from dmpo_trl.envs.rollouts import Rollout, generate_rollouts, rollouts_to_eval
from dmpo_trl.envs.trajectory import Trajectory, check_replay, run_actions
from dmpo_trl.testing import tiny_model
from tests.envs.toy_env import KeyDoorEnv


def lively_model(tok, seed=0):
    """A random tiny model whose greedy replies depend on the context (a plain tiny model repeats one reply)."""
    return tiny_model(tok, seed=seed, hidden_size=64, intermediate_size=128, initializer_range=0.5)


def test_explored_observations_are_the_environments_replies_after_replay(tok):
    env = KeyDoorEnv()
    rollouts = explore(
        lively_model(tok),
        tok,
        env,
        [0, 1, 2],
        num_rollouts=3,
        max_steps=4,
        max_new_tokens=6,
        batch_size=4,
        progress=False,
    )
    assert [(r.variation, r.sample) for r in rollouts] == [(v, k) for v in (0, 1, 2) for k in range(3)]
    for r in rollouts:
        check_replay(env, r.variation, r.messages(env))  # every observation replays from reset
        assert len(r.replies) == r.num_turns >= 1
        assert r.truncated == (not r.done)
    assert len({tuple(r.replies) for r in rollouts}) > 3  # sampling at temperature 1 gives different rollouts


def test_twx_rollouts_replay_from_reset(twx, tok):
    rollouts = generate_rollouts(
        lively_model(tok, seed=3),
        tok,
        twx,
        [0, 1, 2, 3],
        num_rollouts=2,
        max_steps=3,
        max_new_tokens=5,
        temperature=1.0,
        batch_size=3,
        progress=False,
    )
    for r in rollouts:
        check_replay(twx, r.variation, r.messages(twx))
        assert r.start.observation == twx.reset(r.variation).observation


def test_same_seed_same_rollouts_and_caller_rng_untouched(tok):
    import torch

    env, model = KeyDoorEnv(), lively_model(tok)
    kw = dict(num_rollouts=2, max_steps=3, max_new_tokens=5, temperature=1.0, progress=False)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate_rollouts(model, tok, env, [3, 4], seed=7, **kw)
    assert torch.rand(1).item() == before.item()
    b = generate_rollouts(model, tok, env, [3, 4], seed=7, **kw)
    c = generate_rollouts(model, tok, env, [3, 4], seed=8, **kw)
    assert [r.replies for r in a] == [r.replies for r in b] != [r.replies for r in c]


class EndsEarly(KeyDoorEnv):
    """Episodes of different lengths: variation v ends after v % 4 + 1 actions whatever they are."""

    def _step(self, action):
        step = super()._step(action)
        if self.num_steps + 1 >= self.variation % 4 + 1:
            return type(step)(step.observation, step.score, True, step.success, step.valid)
        return step


def test_batched_greedy_rollouts_equal_sequential_decoding(tok):
    """The batch's cache holds exactly the re-rendered conversation: same greedy actions as `HFPolicy`, which feeds
    each episode alone. The replies differ from the parsed actions (case, spaces), so the masking path runs, and
    episodes end at different steps, so finished rows leave the batch and its cache."""
    env, model = EndsEarly(), lively_model(tok)
    variations = list(range(7))
    batched = generate_rollouts(
        model, tok, env, variations, max_steps=4, max_new_tokens=6, batch_size=3, progress=False
    )
    sequential = evaluate_policy(env, HFPolicy(model, tok, max_new_tokens=6), variations, max_steps=4, progress=False)
    assert [r.actions for r in batched] == [e.actions for e in sequential.episodes]
    assert any(reply != action for r in batched for reply, action in zip(r.replies, r.actions, strict=True))
    assert rollouts_to_eval(batched).metrics() == sequential.metrics()
    assert sorted({r.num_turns for r in batched}) == [1, 2, 3, 4]


def _rollout(env, variation, actions, sample=0):
    traj = run_actions(env, variation, actions)
    return Rollout(start=traj.start, actions=traj.actions, steps=traj.steps, variation=variation, sample=sample)


@pytest.fixture
def scripted():
    """KeyDoorEnv variation 0 (red key): a tie, a clean loss, a noisy loss, a duplicate, and a long loss."""
    env = KeyDoorEnv()
    gold = ["take red key", "open door", "move north", "take coin"]
    rollouts = [
        _rollout(env, 0, gold, 0),  # tie with the expert (dropped)
        _rollout(env, 0, ["take red key", "open door", "look around"], 1),  # valid, lower score: clean
        _rollout(env, 0, ["take red key", "jump", "jump"], 2),  # invalid + repeated: noisy only
        _rollout(env, 0, ["take red key", "jump", "jump"], 3),  # the same actions again: duplicate
        _rollout(
            env,
            0,
            [
                "look around",
                "take red key",
                "look around",
                "open door",
                "look around",
                "move north",
                "move south",
                "look around",
            ],
            4,
        ),
    ]
    return env, gold, rollouts


def test_eto_rule_noisy_and_clean(scripted):
    env, gold, rollouts = scripted
    experts = expert_trajectories(env, [0])
    noisy, stats = pair_with_experts(env, experts, rollouts, setting="noisy", max_extra_rejected_turns=2)
    assert stats == {
        "rollouts": 5,
        "lose": 3,
        "win": 0,
        "tie_dropped": 1,
        "duplicate_dropped": 1,
        "no_bad_action_dropped": 0,
        "rejected_cut": 0,
        "rejected_capped": 1,
    }
    assert [r["sample"] for r in noisy] == [1, 2, 4]
    for row in noisy:
        assert [m["content"] for m in row["chosen"] if m["role"] == "assistant"] == gold
        assert row["chosen_reward"] == 1.0 and row["rejected_reward"] < 1.0 and row["outcome"] == "lose"
        check_replay(env, 0, row["rejected"])
    assert noisy[2]["rejected_num_turns"] == len(gold) + 2  # capped at the expert's length + 2
    assert noisy[2]["rollout_num_turns"] == 8
    clean, stats = pair_with_experts(env, experts, rollouts, setting="clean", max_extra_rejected_turns=2)
    # samples 2 and 3 are cut before their first invalid action: ["take red key"], a prefix of the expert's path
    assert [r["sample"] for r in clean] == [1, 4]
    assert stats["rejected_cut"] == 2 and stats["no_bad_action_dropped"] == 2 and stats["duplicate_dropped"] == 0
    assert all(r["rejected_num_invalid"] == 0 and r["rejected_num_repeated"] == 0 for r in clean)


def test_clean_losers_cut_at_their_first_bad_action_not_the_experts_length(scripted):
    env, gold, _ = scripted
    experts = expert_trajectories(env, [0])
    rollouts = [
        # valid detours, then an invalid action at turn 6 (beyond the expert's 4 actions): cut to 6 actions
        _rollout(env, 0, ["look around", "take red key", "open door", "move north", "move south", "look around", "x"]),
        # the same valid start, then a repeat instead: the same cut sides, a duplicate pair
        _rollout(
            env,
            0,
            ["look around", "take red key", "open door", "move north", "move south", "look around", "look around"],
            1,
        ),
        # the expert's first two actions, then an invalid one: cut to a prefix of the expert's path, no mistake
        _rollout(env, 0, ["take red key", "open door", "jump"], 2),
        # a wrong valid action first (the decoy key ends the episode): kept, one action long
        _rollout(env, 0, ["take blue key"], 3),
    ]
    rows, stats = pair_with_experts(env, experts, rollouts, setting="clean", max_extra_rejected_turns=None)
    rejected = [[m["content"] for m in r["rejected"] if m["role"] == "assistant"] for r in rows]
    assert rejected == [rollouts[0].actions[:6], ["take blue key"]]
    assert [r["rejected_num_turns"] for r in rows] == [6, 1] and [r["rollout_num_turns"] for r in rows] == [7, 1]
    assert stats["rejected_cut"] == 3 and stats["duplicate_dropped"] == 1 and stats["no_bad_action_dropped"] == 1
    for row in rows:
        check_replay(env, 0, row["rejected"])
    # ETO's cap still applies after the cut (expert's 4 actions + 1)
    capped, stats = pair_with_experts(env, experts, rollouts[:1], setting="clean", max_extra_rejected_turns=1)
    assert capped[0]["rejected_num_turns"] == 5 and stats["rejected_capped"] == 1


def test_greedy_exploration_is_one_rollout_per_task(tok):
    env = KeyDoorEnv()
    model = tiny_model(tok)
    with pytest.raises(ValueError, match="one rollout per task"):
        explore(model, tok, env, [0, 1], num_rollouts=2, temperature=0.0)
    rollouts = explore(model, tok, env, [0, 1], num_rollouts=1, temperature=0.0, max_steps=2, progress=False)
    again = explore(model, tok, env, [0, 1], num_rollouts=1, temperature=0.0, max_steps=2, seed=5, progress=False)
    assert [r.variation for r in rollouts] == [0, 1] and [r.actions for r in rollouts] == [r.actions for r in again]


def test_a_rollout_better_than_the_expert_is_chosen(scripted):
    env, gold, rollouts = scripted
    weak = run_actions(env, 0, gold[:2])  # an "expert" that stops after two actions (score 2/3)
    rows, stats = pair_with_experts(env, {0: weak}, rollouts[:2], setting="noisy")
    assert stats["win"] == 1 and stats["lose"] == 0 and stats["tie_dropped"] == 1  # 1.0 > 2/3; 2/3 == 2/3
    assert [m["content"] for m in rows[0]["chosen"] if m["role"] == "assistant"] == gold
    assert rows[0]["outcome"] == "win" and rows[0]["chosen_reward"] == 1.0


def _fastchat(prompt, traj: Trajectory, env):
    system, task = prompt[0]["content"], prompt[1]["content"]
    conv = [{"from": "human", "value": system}, {"from": "gpt", "value": "OK"}, {"from": "human", "value": task}]
    for m in traj.messages(env):
        conv.append({"from": "gpt" if m["role"] == "assistant" else "human", "value": m["content"]})
    return conv


def test_same_decisions_as_the_eto_converter(scripted):
    """The converter (`dmpo_trl.data.eto.pair_eto_rollouts`, ETO's construct_preference.py) on the same trajectories
    written as ETO files keeps the same pairs with the same actions."""
    env, gold, rollouts = scripted
    experts = expert_trajectories(env, [0])
    prompt = env.prompt_messages(experts[0].start)
    expert_records = [{"id": "0", "conversations": _fastchat(prompt, experts[0], env)[:-1], "reward": 1.0}]
    rollout_records = [
        {"id": "0", "conversations": _fastchat(prompt, r, env), "meta": {"reward": r.final_score}} for r in rollouts
    ]
    converted = pair_eto_rollouts(expert_records, rollout_records, rollout_offset=2, max_extra_rejected_turns=2)
    ours, stats = pair_with_experts(env, experts, rollouts, setting="noisy", max_extra_rejected_turns=2)
    # the converter keeps duplicates (one pair per rollout file); ours drops repeated action sequences
    assert converted.stats["lose"] == stats["lose"] + stats["duplicate_dropped"]
    assert converted.stats["tie_dropped"] == stats["tie_dropped"]

    def actions(side):
        return [m["content"] for m in side if m["role"] == "assistant"]

    theirs = {tuple(actions(r["rejected"])) for r in converted}
    assert theirs == {tuple(actions(r["rejected"])) for r in ours}
    assert all(actions(r["chosen"]) == gold for r in converted)


class CyclingGold(KeyDoorEnv):
    """A gold path that changes at every draw: 2, 1, 0 extra "look around" first (like a random gold agent)."""

    draws = 0

    def gold_actions(self):
        self.draws += 1
        return ["look around"] * (2 - (self.draws - 1) % 3) + super().gold_actions()


def test_expert_is_the_shortest_of_several_gold_draws():
    env = CyclingGold()
    assert expert_trajectories(env, [0])[0].num_turns == 6  # one draw: the first path, 2 extra actions
    env.draws = 0
    shortest = expert_trajectories(env, [0, 1], draws=3)
    assert [t.num_turns for t in shortest.values()] == [4, 4] and env.draws == 6
    assert shortest[0].actions == ["take red key", "open door", "move north", "take coin"] and shortest[0].success
