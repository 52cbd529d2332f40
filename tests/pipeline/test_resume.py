"""Pipeline stages are cached and resume: a rerun reads every stage from its cache, an interrupted stage (no
stage.json) runs again with exactly its dependants, a changed setting reruns exactly the stages it feeds."""

import json

import pytest

from dmpo_trl.pipeline.cache import STAGE_FILE, StageRunner
from dmpo_trl.pipeline.config import config_from_dict
from dmpo_trl.pipeline.runner import run_pipeline
from dmpo_trl.testing import save_tiny_model
from tests.envs.toy_env import KeyDoorEnv


def test_stage_runner_caches_by_key(tmp_path):
    calls = []

    def work(folder, value):
        calls.append(value)
        (folder / "out.txt").write_text(str(value))
        return {"value": value}

    runner = StageRunner(tmp_path, verbose=False)
    assert runner.run("a", {"x": 1}, work, 1)["result"] == {"value": 1}
    assert runner.run("a", {"x": 1}, work, 1)["cached"] and calls == [1]
    (tmp_path / "a" / "junk").write_text("left over")
    assert runner.run("a", {"x": 2}, work, 2)["result"] == {"value": 2} and calls == [1, 2]
    assert not (tmp_path / "a" / "junk").exists()  # a rerun starts from an empty folder
    (tmp_path / "a" / STAGE_FILE).unlink()  # interrupted after the work, before the record
    assert not runner.run("a", {"x": 2}, work, 2)["cached"] and calls == [1, 2, 2]


def recipe(tmp_path, model, **train):
    return config_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "model": model,
            "seeds": [0],
            "settings": ["noisy"],
            "methods": [{"name": "dpo", "turn_weighting": "uniform"}, {"name": "dmpo-0.7", "gamma": 0.7}],
            "sft": {"episodes": 6, "epochs": 1, "batch_size": 3, "lora_r": 4, "lora_last_layers": 1},
            "explore": {"episodes": 3, "num_rollouts": 2, "temperature": 1.0, "max_steps": 3, "max_new_tokens": 5},
            "train": {"max_pairs": 3, "lora_r": 4, "lora_last_layers": 1, **train},
            "eval": {"episodes": 4, "max_steps": 3, "max_new_tokens": 5, "base_model": False},
            "progress": False,
        }
    )


@pytest.fixture
def model(tmp_path, tok):
    return save_tiny_model(tmp_path / "tiny", tok)


def ran(results):
    return [s["stage"] for s in results["stage_log"] if not s["cached"]]


def test_pipeline_resumes_from_its_cache(tmp_path, model):
    first = run_pipeline(recipe(tmp_path, model), env=KeyDoorEnv())
    stages = [s["stage"] for s in first["stage_log"]]
    assert ran(first) == stages  # experts, sft, eval/sft, explore, pairs, 2 x (train, eval)
    assert stages[:2] == ["experts", "sft"] and len(stages) == 9 and (tmp_path / "run" / "report.md").is_file()

    again = run_pipeline(recipe(tmp_path, model), env=KeyDoorEnv())
    assert ran(again) == []
    assert again["summary"] == first["summary"]

    # interrupted during the DMPO run: its training restarts, its evaluation follows; nothing else reruns
    (tmp_path / "run" / "seed0" / "r1" / "noisy-dmpo-0.7" / "train" / STAGE_FILE).unlink()
    resumed = run_pipeline(recipe(tmp_path, model), env=KeyDoorEnv())
    assert ran(resumed) == ["seed0/r1/noisy-dmpo-0.7/train", "seed0/r1/noisy-dmpo-0.7/eval"]

    # a training setting changes: both training runs and their evaluations rerun; SFT, explore, pairs do not
    changed = run_pipeline(recipe(tmp_path, model, learning_rate=1e-3), env=KeyDoorEnv())
    assert ran(changed) == [
        "seed0/r1/noisy-dpo/train",
        "seed0/r1/noisy-dpo/eval",
        "seed0/r1/noisy-dmpo-0.7/train",
        "seed0/r1/noisy-dmpo-0.7/eval",
    ]
    # the clean setting's cap feeds no noisy stage; the noisy cap reruns the pairs and everything after them
    cfg = recipe(tmp_path, model, learning_rate=1e-3)
    cfg.explore.clean_max_extra_rejected_turns = 0
    assert ran(run_pipeline(cfg, env=KeyDoorEnv())) == []
    for cap in (0, 5):
        cfg.explore.max_extra_rejected_turns = cap
        rerun = ran(run_pipeline(cfg, env=KeyDoorEnv()))
        assert rerun[0] == "seed0/r1/pairs-noisy" and "seed0/r1/explore" not in rerun  # the rollouts are reused
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["train"]["learning_rate"] == 1e-3
    assert {r["turn_weighting"] for r in saved["runs"]} == {"uniform", "dmpo"}


def test_second_round_and_full_fine_tuning(tmp_path, model):
    cfg = recipe(tmp_path, model, lora_r=0)  # the preference stage fine-tunes the whole model
    cfg.rounds = 2
    cfg.methods = cfg.methods[1:]
    results = run_pipeline(cfg, env=KeyDoorEnv())
    assert [(r["round"], r["method"]) for r in results["runs"]] == [(1, "dmpo-0.7"), (2, "dmpo-0.7")]
    names = [s["stage"] for s in results["stage_log"]]
    # round 2 explores with the round-1 model and pairs its own rollouts
    assert "seed0/r2/noisy-dmpo-0.7/explore" in names and "seed0/r2/noisy-dmpo-0.7/pairs" in names
    first, second = results["runs"]
    if first["pairs"]:
        assert first["train"]["adapter"] is None and (tmp_path / "run/seed0/r1/noisy-dmpo-0.7/train/model").is_dir()
    explored = results["explore"]["seed0/r2/noisy-dmpo-0.7/explore"]
    assert explored["rollouts"] == 3 * 2


class RandomGold(KeyDoorEnv):
    """An environment whose gold path is drawn at random at every call (like TextWorld-Express with many rooms)."""

    def gold_actions(self):
        import random

        return ["look around"] * random.randrange(3) + super().gold_actions()


def test_experts_are_drawn_once_and_reused(tmp_path, model):
    results = run_pipeline(recipe(tmp_path, model), env=RandomGold())
    stored = {}
    for line in (tmp_path / "run" / "experts" / "experts.jsonl").read_text().splitlines():
        rec = json.loads(line)
        stored[(rec["split"], rec["variation"])] = rec["actions"]
    pairs = [json.loads(x) for x in (tmp_path / "run/seed0/r1/pairs-noisy/train.jsonl").read_text().splitlines()]
    for row in pairs:  # every chosen side is the stored expert trajectory of its task
        chosen = [m["content"] for m in row["chosen"] if m["role"] == "assistant"]
        assert chosen == stored[("sft", row["variation"])]
    gold = results["heldout_gold_lengths"]
    assert gold == {v: len(stored[("heldout", v)]) for v in results["variations"]["heldout"]}
    again = run_pipeline(recipe(tmp_path, model), env=RandomGold())
    assert again["heldout_gold_lengths"] == gold and again["summary"] == results["summary"]
    # the shortest of several draws: a new experts stage (its key has the draws), every expert no longer than before
    cfg = recipe(tmp_path, model)
    cfg.expert_draws = 12
    shortest = run_pipeline(cfg, env=RandomGold())
    assert "experts" in ran(shortest)
    assert all(n <= gold[v] for v, n in shortest["heldout_gold_lengths"].items())


def test_design_options_reach_the_trainer_and_the_report(tmp_path, model):
    """Greedy exploration of games SFT did not see, a seen set, per-method learning rates, the NLL arm, the
    pre-registered comparisons: each is used by its stage and shown in the report."""
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "model": model,
            "seeds": [0],
            "settings": ["noisy"],
            "methods": [
                {"name": "dpo", "turn_weighting": "uniform", "learning_rate": 3e-4},
                {"name": "dmpo-nll", "gamma": 0.9, "sft_weight": 0.5},
            ],
            "comparisons": ["noisy/dmpo-nll vs sft", "noisy/dmpo-nll vs noisy/dpo"],
            "sft": {"episodes": 6, "epochs": 1, "batch_size": 3, "lora_r": 4, "lora_last_layers": 1},
            "explore": {"episodes": 5, "games": "disjoint", "max_steps": 3, "max_new_tokens": 5},
            "train": {"lora_r": 4, "lora_last_layers": 1, "batch_size": 1, "gradient_accumulation_steps": 2},
            "eval": {"episodes": 4, "seen_episodes": 3, "max_steps": 3, "max_new_tokens": 5, "base_model": False},
            "progress": False,
        }
    )
    results = run_pipeline(cfg, env=KeyDoorEnv())
    v = results["variations"]
    assert len(v["explore"]) == 5 and not set(v["explore"]) & set(v["sft"])
    assert len(v["seen"]) == 3 and not set(v["seen"]) & (set(v["sft"]) | set(v["explore"]) | set(v["heldout"]))
    assert set(v["heldout"]) <= set(KeyDoorEnv().variations("dev"))
    assert results["explore"]["seed0/r1/explore"]["rollouts"] == 5  # one greedy rollout per game
    dpo, nll = results["runs"]
    assert dpo["train"]["learning_rate"] == 3e-4 and nll["train"]["learning_rate"] == cfg.train.learning_rate
    if nll["pairs"]:
        assert nll["train"]["loss_type"] == ["sigmoid", "sft"] and nll["train"]["loss_weights"] == [1.0, 0.5]
        assert dpo["train"]["loss_type"] == ["sigmoid"]
        # 2 epochs of ceil(pairs / 2) optimizer steps (effective batch 2)
        assert nll["train"]["optimizer_steps"] == 2 * -(-nll["pairs"] // 2)
    for run in (*results["runs"], {"eval": results["evals"]["sft"]}):
        assert sorted(e["variation"] for e in run["eval"]["seen"]["episodes"]) == v["seen"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.index("## Pre-registered comparisons") < report.index("## Held-out results")
    assert "1. noisy/dmpo-nll vs sft" in report and "| noisy/dmpo-nll vs noisy/dpo | 4 |" in report
    assert "a departure from the paper" in report and "## Seen games (3 training variations" in report
    assert [c["comparison"] for c in results["comparisons"]] == cfg.comparisons
