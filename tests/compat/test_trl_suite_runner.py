"""scripts/trl_suite.py: the name swap, and the offline harness end to end on a small test module in TRL's style.

TRL's own test module is not in this repository (see docs/dmpo_trainer.md, "Compatibility checks"); this one calls the
trainers the way it does (`trl-internal-testing/*` model ids and datasets, a two-format parametrisation, the same
assertions), so CI checks that the harness builds the tiny models and datasets offline and that the runner swaps the
names and counts the outcomes.
"""

import importlib.util
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("trl_suite", ROOT / "scripts" / "trl_suite.py")
trl_suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trl_suite)

MODULE = """
import pytest
import torch
from datasets import load_dataset

from trl import DPOConfig, DPOTrainer

from .testing_utils import TrlTestCase


class TestDPOTrainer(TrlTestCase):
    @pytest.mark.parametrize("config_name", ["standard_preference", "conversational_preference"])
    def test_train_dataset_format(self, config_name):
        dataset = load_dataset("trl-internal-testing/zen", config_name, split="train")
        training_args = DPOConfig(output_dir=self.tmp_dir, learning_rate=0.1, max_steps=2, report_to="none")
        trainer = DPOTrainer(
            model="trl-internal-testing/tiny-Qwen2ForCausalLM-2.5", args=training_args, train_dataset=dataset
        )
        previous = {n: p.clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        assert trainer.state.log_history[-1]["train_loss"] is not None
        for n, param in previous.items():
            assert not torch.equal(param, trainer.model.get_parameter(n)), n

    def test_tag_added(self):
        dataset = load_dataset("trl-internal-testing/zen", "standard_preference", split="train")
        trainer = DPOTrainer(model="trl-internal-testing/tiny-Qwen2ForCausalLM-2.5", train_dataset=dataset)
        assert isinstance(trainer, DPOTrainer) and {"trl", "dpo"} <= set(trainer.model.model_tags)
"""


def test_swap_names_changes_the_two_names_only():
    source = "from trl import DPOConfig, DPOTrainer\nclass TestDPOTrainer:\n    t = DPOTrainer(args=DPOConfig())\n"
    swapped = trl_suite.swap_names(source)
    assert swapped == (
        "from dmpo_trl import DMPOConfig, DMPOTrainer\nclass TestDPOTrainer:\n    t = DMPOTrainer(args=DMPOConfig())\n"
    )
    with pytest.raises(SystemExit, match="does not import the trainer"):
        trl_suite.swap_names("import trl\n")


def test_runner_runs_both_trainers_offline_and_compares(tmp_path):
    tests = tmp_path / "trl" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_dpo_trainer.py").write_text(MODULE)
    out = tmp_path / "out"
    assert trl_suite.main(["--trl-tests", str(tests), "--out", str(out)]) == 0
    for trainer in ("dpo", "dmpo"):
        results = trl_suite.outcomes(out / trainer / "junit.xml")
        assert sorted(results.values()) == ["passed"] * 3, (
            trainer,
            results,
            (out / trainer / "pytest.log").read_text(),
        )
    summary = (out / "summary.md").read_text()
    assert "| dmpo | 3 | 0 | 0 | 0 | 3 |" in summary and "not by DMPOTrainer (0)" in summary
    assert (
        "from dmpo_trl import DMPOConfig, DMPOTrainer"
        in (out / "dmpo" / "trl_tests" / "test_dpo_trainer.py").read_text()
    )


def test_a_rerun_removes_only_its_own_run_folder(tmp_path):
    test_file = tmp_path / "test_dpo_trainer.py"
    test_file.write_text("from trl import DPOConfig, DPOTrainer\n")
    run_dir = tmp_path / "out" / "dmpo"
    trl_suite.prepare(run_dir, test_file, "dmpo")
    (run_dir / "pytest.log").write_text("a previous run")
    trl_suite.prepare(run_dir, test_file, "dmpo")  # its own files: replaced
    assert not (run_dir / "pytest.log").exists()
    (run_dir / "thesis.tex").write_text("mine")
    with pytest.raises(SystemExit, match="holds files it did not write"):
        trl_suite.prepare(run_dir, test_file, "dmpo")
    assert (run_dir / "thesis.tex").read_text() == "mine"
