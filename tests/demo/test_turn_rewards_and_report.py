"""Per-turn implicit rewards of preference pairs and their plot."""

from __future__ import annotations

import pytest
import torch

from dmpo_trl.demo.report import plot_turn_rewards
from dmpo_trl.demo.turn_rewards import mean_by_turn, turn_log_ratios
from dmpo_trl.envs.pairs import build_pairs
from dmpo_trl.testing import make_tokenizer, tiny_model
from tests.envs.toy_env import KeyDoorEnv


@pytest.fixture(scope="module")
def rows():
    return build_pairs(KeyDoorEnv(), [0, 1, 2], setting="noisy", seed=0, progress=False)


def test_turn_log_ratios_zero_at_start_then_per_action(rows):
    from peft import LoraConfig, get_peft_model

    tok = make_tokenizer("qwen2_5")
    peft_model = get_peft_model(tiny_model(tok), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ratios = turn_log_ratios(peft_model, tok, rows)
    for row, item in zip(rows, ratios, strict=True):
        assert len(item["chosen"]) == row["chosen_num_turns"] and len(item["rejected"]) == row["rejected_num_turns"]
        assert all(v == 0.0 for v in item["chosen"] + item["rejected"])  # LoRA B = 0: policy == reference
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    moved = turn_log_ratios(peft_model, tok, rows)
    assert any(abs(v) > 1e-4 for item in moved for v in item["chosen"])
    # an explicit reference equal to the policy gives zeros again
    plain = tiny_model(tok)
    assert all(v == 0 for item in turn_log_ratios(plain, tok, rows[:1], reference=plain) for v in item["rejected"])
    with pytest.raises(ValueError, match="reference="):
        turn_log_ratios(plain, tok, rows[:1])


def test_mean_by_turn():
    ratios = [{"chosen": [1.0, 2.0], "rejected": [-1.0]}, {"chosen": [3.0], "rejected": [-3.0, -5.0]}]
    assert mean_by_turn(ratios, "chosen", scale=0.5) == [(0, 1.0, 2), (1, 1.0, 1)]
    assert mean_by_turn(ratios, "rejected") == [(0, -2.0, 2), (1, -5.0, 1)]


def test_turn_reward_plot(tmp_path):
    ratios = [{"chosen": [0.1, 0.2], "rejected": [-0.3]}]
    path = plot_turn_rewards(ratios, 0.1, tmp_path / "turn_rewards.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_turn_reward_plot_names_the_pairs_the_main_job_passes(tmp_path, monkeypatch):
    """The main job plots a few of its training pairs (its report says so), and so does the plot's title."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_turn_rewards([{"chosen": [0.1], "rejected": [-0.3]}], 0.1, tmp_path / "turn_rewards.png")
    assert figures[0].axes[0].get_title() == "implicit reward per turn (training pairs)"
