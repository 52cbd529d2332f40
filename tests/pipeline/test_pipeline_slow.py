"""The pipeline end to end at reduced size on the real environment and the embedded SmolLM2-135M-Instruct (slow)."""

from __future__ import annotations

import json
import time

import pytest


@pytest.mark.slow
def test_pipeline_end_to_end_reduced(tmp_path):
    from dmpo_trl.pipeline.config import config_from_dict
    from dmpo_trl.pipeline.runner import run_pipeline

    def cfg():
        return config_from_dict(
            {
                "output_dir": str(tmp_path / "run"),
                "task": "coin",
                "env_kwargs": {"game_params": "numLocations=4,numDistractorItems=0,includeDoors=0"},
                "seeds": [0],
                "settings": ["noisy", "clean"],
                "methods": [{"name": "dpo", "turn_weighting": "uniform"}, {"name": "dmpo-0.7", "gamma": 0.7}],
                "sft": {"episodes": 4, "epochs": 1, "batch_size": 2, "max_length": 768},
                "explore": {"episodes": 2, "num_rollouts": 2, "temperature": 1.0, "max_steps": 3, "max_new_tokens": 8},
                "train": {"max_pairs": 2, "max_length": 768},
                "eval": {"episodes": 3, "max_steps": 3, "max_new_tokens": 8},
                "progress": False,
            }
        )

    start = time.perf_counter()
    results = run_pipeline(cfg(), command="pytest reduced pipeline")
    print(f"reduced pipeline: {time.perf_counter() - start:.0f} s")
    out = tmp_path / "run"
    for name in (
        "report.md",
        "results.json",
        "results.png",
        "length_buckets.png",
        "training.png",
        "sft/model/model.safetensors",
        "seed0/r1/explore/rollouts.jsonl",
        "seed0/r1/pairs-noisy/train.jsonl",
        "eval/base/rollouts.jsonl",
        "eval/sft/rollouts.jsonl",
    ):
        assert (out / name).is_file(), name
    assert results["sft"]["experts"] == 4 and results["sft"]["data"]["action_tokens"] > 0
    assert len(results["runs"]) == 4
    for run in results["runs"]:
        assert run["eval"]["metrics"]["episodes"] == 3
        if run["pairs"]:
            assert (out / f"seed0/r1/{run['setting']}-{run['method']}/train/adapter/adapter_config.json").is_file()
    noisy = [r for r in results["runs"] if r["setting"] == "noisy"]
    assert noisy[0]["pairs"] == noisy[1]["pairs"] == results["pairs"]["seed0/r1/pairs-noisy"]["pairs"]
    report = (out / "report.md").read_text()
    assert "Success by gold-path length" in report and "| sft |" in report
    assert json.loads((out / "results.json").read_text())["command"] == "pytest reduced pipeline"

    again = run_pipeline(cfg(), command="pytest reduced pipeline")
    assert all(s["cached"] for s in again["stage_log"])
    assert again["summary"] == results["summary"]
