"""The main job end to end at reduced size (slow: it converts/loads SmolLM2-135M-Instruct and trains on CPU)."""

from __future__ import annotations

import json
import time

import pytest


@pytest.mark.slow
def test_main_job_reduced(tmp_path):
    from dmpo_trl.demo.main_job import MainJobConfig, run_main_job

    cfg = MainJobConfig(
        output_dir=str(tmp_path / "run"),
        train_episodes=4,
        heldout_episodes=2,
        max_steps=2,
        turn_reward_pairs=2,
        eval_max_steps=2,
        max_new_tokens=6,
        eval_every=2,
    )
    start = time.perf_counter()
    summary = run_main_job(cfg, command="pytest reduced main job")
    print(f"reduced main job: {time.perf_counter() - start:.0f} s")
    out = tmp_path / "run"
    for name in (
        "report.md",
        "summary.json",
        "training.png",
        "turn_rewards.png",
        "success.png",
        "data/train.jsonl",
        "data/heldout.jsonl",
        "adapter/adapter_model.safetensors",
    ):
        assert (out / name).is_file(), name
    assert summary["train"]["steps"] == 2 and summary["train"]["pairs"] == 4
    assert summary["eval"]["gold"]["success_rate"] == 1.0
    for when in ("before", "after"):
        figures = summary["eval"][when]
        assert figures["episodes"] == 2 and 0 <= figures["success_rate"] <= 1 and 1 <= figures["mean_steps"] <= 2
    assert [step for step, _ in summary["eval_during_training"]] == [2]
    report = (out / "report.md").read_text()
    assert f"| success rate | {summary['eval']['before']['success_rate']:.3f} |" in report
    assert json.loads((out / "summary.json").read_text())["command"] == "pytest reduced main job"
