"""`dmpo-trl build-pairs`, `dmpo-trl evaluate` and `dmpo-trl main --help` (in-process)."""

from __future__ import annotations

import json

import pytest

from dmpo_trl import cli
from dmpo_trl.data.io import read_records as read_jsonl
from dmpo_trl.testing import make_tokenizer, save_tiny_model


def test_build_pairs_command(tmp_path, capsys):
    out = tmp_path / "pairs"
    code = cli.main(
        [
            "build-pairs",
            "--env",
            "twx",
            "--task",
            "coin",
            "--setting",
            "clean",
            "--train",
            "4",
            "--heldout",
            "2",
            "--seed",
            "5",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    train, heldout = read_jsonl(out / "train.jsonl"), read_jsonl(out / "heldout.jsonl")
    assert len(train) == 4 and len(heldout) == 2
    assert {r["setting"] for r in train} == {"clean"} and {r["seed"] for r in train} == {5}
    info = json.loads((out / "build_info.json").read_text())
    assert not set(info["train_variations"]) & set(info["heldout_variations"])
    assert "4 train pairs, 2 held-out pairs" in capsys.readouterr().out


def test_evaluate_command_gold_oracle(tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--model", "gold", "--env", "twx", "--episodes", "3", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "success_rate: 1.000" in printed and "invalid_action_rate: 0.000" in printed
    data = json.loads(report.read_text())
    assert data["success_rate"] == 1.0 and len(data["episodes"]) == 3


def test_evaluate_command_with_a_model_folder_and_an_adapter(tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer("qwen2_5")
    base = save_tiny_model(tmp_path / "tiny", tok)
    args = ["--env", "twx", "--episodes", "2", "--max-steps", "2", "--max-new-tokens", "4"]
    assert cli.main(["evaluate", "--model", base, *args]) == 0
    assert "success_rate: 0.000" in capsys.readouterr().out

    model = AutoModelForCausalLM.from_pretrained(base)  # the adapter records this folder as its base
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    from dmpo_trl.models import load_model

    loaded, _ = load_model(str(tmp_path / "adapter"))
    assert hasattr(loaded, "disable_adapter")
    assert cli.main(["evaluate", "--model", str(tmp_path / "adapter"), *args]) == 0


def test_evaluate_command_unknown_task(capsys):
    from dmpo_trl.envs import UnknownTaskError

    assert cli.main(["evaluate", "--model", "gold", "--env", "twx", "--task", "gold-rush"]) == 1
    [line] = capsys.readouterr().err.splitlines()  # one line, no traceback
    assert line.startswith("dmpo-trl evaluate: ") and "no task 'gold-rush'" in line
    with pytest.raises(UnknownTaskError, match="no task 'gold-rush'"):  # --debug: the exception itself
        cli.main(["--debug", "evaluate", "--model", "gold", "--env", "twx", "--task", "gold-rush"])


def test_main_command_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["main", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--recipe", "--setting", "--method", "--sft-episodes", "--heldout-episodes", "--explore-episodes"):
        assert flag in text, flag


def test_top_level_help_names_every_stage_of_the_main_job(capsys):
    """`dmpo-trl --help` and `dmpo-trl main --help` describe the main job with its SFT stage."""
    assert cli.main([]) == 2  # no command: the help
    listing = " ".join(capsys.readouterr().out.split())
    main_line = listing[listing.index("main the main job") :]
    for stage in ("SFT", "rollouts", "DMPO", "evaluate after each stage", "report"):
        assert stage in main_line, stage
    with pytest.raises(SystemExit):
        cli.main(["main", "--help"])
    description = " ".join(capsys.readouterr().out.split())
    assert "fine-tuned (SFT, LoRA) on expert trajectories" in description and "after each stage" in description
