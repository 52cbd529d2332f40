"""The main job end to end at reduced size (slow: it converts/loads SmolLM2-135M-Instruct and trains on CPU)."""

from __future__ import annotations

import json
import time

import pytest


def test_main_job_is_the_experiment_recipe_scaled_down():
    """The main job runs experiment.yaml at its --quick size with one seed, one setting and the recipe's DMPO method
    of that setting: every training setting is the recipe's."""
    from dmpo_trl.demo.main_job import MAIN_RECIPE, MainJobConfig, pipeline_config
    from dmpo_trl.pipeline.config import load_recipe

    quick = load_recipe(MAIN_RECIPE, quick=True)
    full = load_recipe(MAIN_RECIPE)
    job = pipeline_config(MainJobConfig(output_dir="x"))
    assert (job.env, job.task, job.env_kwargs, job.purpose) == (quick.env, quick.task, quick.env_kwargs, "test")
    assert job.sft == quick.sft and job.explore == quick.explore and job.train == quick.train
    assert job.eval.split == "test" and job.eval.episodes == quick.eval.episodes and job.eval.base_model
    assert job.eval.min_gold_steps == quick.eval.min_gold_steps and job.eval.max_steps == quick.eval.max_steps
    (method,) = job.methods
    recipe_method = next(m for m in full.methods if m.name == "dmpo" and m.trains_in("clean"))
    assert (method.turn_weighting, method.gamma, method.learning_rate, method.sft_weight) == (
        recipe_method.turn_weighting,
        recipe_method.gamma,
        recipe_method.learning_rate,
        recipe_method.sft_weight,
    )
    assert job.settings == ["clean"] and job.seeds == [0] and "clean/dmpo vs sft" in job.comparisons
    smaller = pipeline_config(MainJobConfig(output_dir="x", sft_episodes=4, heldout_episodes=3))
    assert smaller.sft.episodes == 4 and smaller.eval.episodes == 3 and smaller.train == quick.train
    with pytest.raises(ValueError, match="no single method 'nope'"):
        pipeline_config(MainJobConfig(method="nope"))


@pytest.mark.slow
def test_main_job_reduced(tmp_path):
    from dmpo_trl.demo.main_job import MainJobConfig, run_main_job

    cfg = MainJobConfig(
        output_dir=str(tmp_path / "run"),
        sft_episodes=4,
        sft_epochs=1,
        explore_episodes=4,
        heldout_episodes=3,
        explore_max_steps=3,
        eval_max_steps=3,
        max_new_tokens=8,
        max_length=768,
    )
    start = time.perf_counter()
    summary = run_main_job(cfg, command="pytest reduced main job")
    print(f"reduced main job: {time.perf_counter() - start:.0f} s")
    out = tmp_path / "run"
    for name in (
        "report.md",
        "summary.json",
        "results.png",
        "training.png",
        "length_buckets.png",
        "sft/model/model.safetensors",
    ):
        assert (out / name).is_file(), name
    assert summary["eval"]["gold"]["success_rate"] == 1.0
    assert summary["heldout_gold_mean_steps"] == pytest.approx(
        sum(k * v for k, v in summary["heldout_gold_lengths"].items()) / 3
    )
    for when in ("before", "sft", "dmpo"):
        figures = summary["eval"][when]
        assert figures["episodes"] == 3 and 0 <= figures["success_rate"] <= 1 and 1 <= figures["mean_steps"] <= 3
        assert abs(sum(summary["action_shares"][when].values()) - 1) < 1e-9
    report = (out / "report.md").read_text()
    assert report.startswith("# DMPO main job report")
    assert f"| success rate | {summary['eval']['before']['success_rate']:.3f} |" in report
    assert "of them invalid; its actions: `" in report
    assert "clean/dmpo vs sft: " in report and "paired 95% bootstrap interval over 3 games" in report
    assert json.loads((out / "summary.json").read_text())["command"] == "pytest reduced main job"


def test_action_effects_by_hand(tmp_path):
    """Two games: take (+), repeat (invalid), put in the wrong place (-); open (=), take (+). Shares by hand."""
    from dmpo_trl.demo.main_job import action_effects

    games = [
        {"actions": ["take a", "take a", "put a in b"], "scores": [0.25, 0.25, 0.0], "valid": [True, False, True]},
        {"actions": ["open c", "take d"], "scores": [0.0, 0.25], "valid": [True, True]},
    ]
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in games))
    assert action_effects(path) == {
        "raised the score": 2 / 5,
        "lowered the score": 1 / 5,
        "left it unchanged": 1 / 5,
        "invalid": 1 / 5,
        "repeated the previous action": 1 / 5,
    }
