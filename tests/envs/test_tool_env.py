"""`ToolEnvAdapter`: a TRL `environment_factory` environment (tool methods, reset, get_reward) as an `AgentEnv`."""

import json

import pytest
from datasets import Dataset

from dmpo_trl import DMPOTrainer
from dmpo_trl.core.rows.tokenization import tokenize_conversation
from dmpo_trl.envs.evaluate import GoldPolicy, evaluate_policy
from dmpo_trl.envs.explore import expert_trajectories, explore, pair_with_experts
from dmpo_trl.envs.pairs import build_pairs, gold_trajectory
from dmpo_trl.envs.rollouts import rollouts_to_eval
from dmpo_trl.envs.tool_env import ToolEnvAdapter, tool_call_action
from dmpo_trl.envs.trajectory import replay_mismatches
from dmpo_trl.testing import tiny_model
from tests.core.helpers import make_args
from tests.envs.tool_env_fixture import VaultEnv, vault_rows


@pytest.fixture
def env():
    return ToolEnvAdapter(VaultEnv, vault_rows())


def test_reset_tools_and_first_observation_as_in_grpo_trainer(env):
    start = env.reset(0)
    prompt = env.prompt_messages(start)
    # TRL appends reset()'s string to the last user message, verbatim
    assert prompt[-1] == {
        "role": "user",
        "content": "Find the coin and take it. You are in the hall. Doors lead north and east.",
    }
    assert prompt[0]["role"] == "system"
    assert [s["function"]["name"] for s in env.tool_schemas()] == ["move", "take"]
    assert env.tool_schemas()[0]["function"]["parameters"]["properties"]["direction"]["type"] == "string"
    assert env.variations("train") == list(range(8)) and env.variations("test") == [8, 9, 10, 11]


def test_steps_rewards_errors_and_final_answer(env):
    env.reset(1)  # coin in the east room
    step = env.step(tool_call_action("move", {"direction": "west"}))
    assert not step.valid and json.loads(step.observation.replace("'", '"')) == {
        "error": "there is no door to the west"
    }
    step = env.step(tool_call_action("dance"))
    assert not step.valid and "not found" in step.observation
    step = env.step(tool_call_action("move", {"direction": "east"}))
    assert step.valid and step.observation == "You are in the east room. There is a coin." and step.score == 0.0
    step = env.step(tool_call_action("take", {"item": "coin"}))
    assert step.score == 1.0 and step.success and not step.done  # GRPOTrainer's rollout goes on until a text reply
    step = env.step("I have the coin.")
    assert step.done and step.success


def test_parse_reply_reads_tool_calls_and_final_answers(env):
    call = tool_call_action("move", {"direction": "north"})
    assert env.parse_reply('<tool_call>\n{"name": "move", "arguments": {"direction": "north"}}\n</tool_call>') == call
    assert env.parse_reply('{"name": "move", "arguments": "{\\"direction\\": \\"north\\"}"}') == call
    assert env.parse_reply("  The coin is mine. ") == "The coin is mine."


def test_gold_trajectory_renders_tool_calls_through_the_chat_template(env, tok):
    traj = gold_trajectory(env, 0)
    messages = traj.messages(env)
    assert messages[0]["tool_calls"][0]["function"] == {"name": "move", "arguments": {"direction": "north"}}
    assert messages[1] == {"role": "tool", "name": "move", "content": "You are in the north room. There is a coin."}
    assert replay_mismatches(env, 0, messages) == []
    conv = tokenize_conversation(tok, env.prompt_messages(traj.start), messages, tools=env.tool_schemas())
    action0 = tok.decode([i for i, t in zip(conv.input_ids, conv.turn_ids, strict=True) if t == 0])
    # Qwen2.5's template writes the call as JSON inside <tool_call> tags; the action span is exactly that + <|im_end|>
    assert action0.startswith("<tool_call>") and action0.endswith("</tool_call><|im_end|>")
    assert env.parse_reply(action0) == traj.actions[0]
    full = tok.decode(conv.input_ids)
    assert '"name": "move"' in full and "<tools>" in full  # the schemas reach the system prompt


def test_pairs_train_and_evaluate(env, tok, tmp_path):
    rows = build_pairs(env, env.variations("train"), setting="noisy", seed=0, progress=False)
    assert len(rows) == 8 and all(r["tools"] == env.tool_schemas() for r in rows)
    for row in rows:
        assert replay_mismatches(env, row["variation"], row["chosen"]) == []
        assert replay_mismatches(env, row["variation"], row["rejected"]) == []
        assert row["chosen_reward"] == 1.0 and row["rejected_reward"] < 1.0
    gold = evaluate_policy(env, GoldPolicy(), env.variations("test"), max_steps=4, progress=False)
    assert gold.success_rate == 1.0 and gold.invalid_action_rate == 0.0

    # explore with a (random) model: real tool replies, ETO pairs against the experts
    model = tiny_model(tok, max_position_embeddings=2048)
    rollouts = explore(
        model, tok, env, env.variations("train")[:4], num_rollouts=2, max_steps=3, max_new_tokens=8, progress=False
    )
    for r in rollouts:
        assert replay_mismatches(env, r.variation, r.messages(env)) == []
    explored, stats = pair_with_experts(env, expert_trajectories(env, range(4)), rollouts, setting="noisy")
    assert stats["lose"] == len(explored) > 0 and all(r["tools"] for r in explored)
    assert rollouts_to_eval(rollouts[::2]).success_rate == 0.0

    trainer = DMPOTrainer(
        model=model,
        args=make_args(tmp_path, max_length=2048, per_device_train_batch_size=2, max_steps=1),
        train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected", "tools")} for r in rows]),
        processing_class=tok,
    )
    trainer.train()
    assert trainer.state.log_history[0]["turns/chosen"] == 2.0


def test_the_same_environment_serves_grpo_trainer(tok, tmp_path):
    """GRPOTrainer accepts the fixture as `environment_factory` and exposes the same tools as the adapter; the
    adapter reads the same rows from a `datasets.Dataset` (Arrow fills missing argument keys with None)."""
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list(vault_rows())
    assert dataset[0]["gold_actions"][1]["arguments"] == {"direction": None, "item": "coin"}
    trainer = GRPOTrainer(
        model=tiny_model(tok),
        args=GRPOConfig(
            output_dir=str(tmp_path / "grpo"),
            report_to=[],
            use_cpu=True,
            per_device_train_batch_size=2,
            num_generations=2,
            max_completion_length=8,
            bf16=False,
        ),
        train_dataset=dataset,
        processing_class=tok,
        environment_factory=VaultEnv,
    )
    grpo_tools = sorted(t.__name__ for t in trainer.tools)
    adapter = ToolEnvAdapter(VaultEnv, dataset)
    assert grpo_tools == sorted(adapter.tools) == ["move", "take"]
    assert "VaultEnv" in trainer.reward_func_names  # get_reward is the environment's reward, as in the adapter
    assert gold_trajectory(adapter, 1).success
