"""Per-turn implicit rewards and the main job's report writer (plots, Markdown)."""

from __future__ import annotations

import pytest
import torch

from dmpo_trl.demo.report import plot_success, plot_training, plot_turn_rewards, write_report
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


def test_report_and_plots(tmp_path):
    figures = {
        "success_rate": 0.25,
        "mean_score": 0.5,
        "mean_steps": 2.5,
        "invalid_action_rate": 0.75,
        "episodes": 4.0,
    }
    after = {**figures, "success_rate": 0.75}
    history = [
        {"loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.0, "step": 1},
        {"loss": 0.41, "rewards/margins": 0.9, "rewards/accuracies": 1.0, "step": 2},
    ]
    ratios = [{"chosen": [0.1, 0.2], "rejected": [-0.3]}]
    for path in (
        plot_training(history, tmp_path / "training.png", [(1, 0.0), (2, 0.5)]),
        plot_turn_rewards(ratios, 0.1, tmp_path / "turn_rewards.png"),
        plot_success(figures, after, tmp_path / "success.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = {
        "command": "python -m dmpo_trl.demo.main_job --max-steps 2",
        "finished": "today",
        "machine": "test",
        "runtime_s": 61.0,
        "settings": {"eval_max_steps": 3, "gamma": 0.7},
        "eval": {"before": figures, "after": after, "gold": {**figures, "success_rate": 1.0}},
        "eval_during_training": [(2, after)],
        "heldout_gold_lengths": {1: 3, 2: 1},
        "train": {
            "steps": 2,
            "pairs": 4,
            "runtime_s": 10.0,
            "first_loss": 0.69,
            "last_loss": 0.41,
            "first_margin": 0.0,
            "last_margin": 0.9,
            "last_accuracy": 1.0,
        },
        "turn_rewards": {"pairs": 1, "table": [[0, 0.01, -0.03], [1, 0.02, "-"]]},
        "stage_times_s": {"train": 10.0},
        "samples": [{"variation": 7, "before": ["dance"], "after": ["take coin"]}],
    }
    text = write_report(tmp_path / "report.md", summary).read_text()
    assert "`python -m dmpo_trl.demo.main_job --max-steps 2`" in text
    assert "| success rate | 0.250 | 0.750 | 1.000 |" in text
    assert "| invalid-action rate | 0.750 | 0.750 | 0.750 |" in text
    assert "step 2: 0.750" in text and "{1: 3, 2: 1}" in text and "Loss 0.690 -> 0.410" in text
