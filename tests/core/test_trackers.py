"""A tracker in `report_to` that is not installed: one clear error naming the `tracking` extra (trainer and CLI)."""

from __future__ import annotations

import pytest
import transformers.integrations
import yaml
from datasets import Dataset

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.cli import main as cli_main
from dmpo_trl.core.trackers import MissingTrackerError
from dmpo_trl.testing import agent_pair, make_tokenizer, tiny_model


@pytest.fixture(params=["tensorboard", "trackio"])
def missing(request, monkeypatch):
    """A tracker transformers reports as not installed (whether or not it is)."""
    check = {"tensorboard": "is_tensorboard_available", "trackio": "is_trackio_available"}[request.param]
    monkeypatch.setattr(transformers.integrations, check, lambda: False)
    return request.param


def test_trainer_names_the_extra_and_stays_a_runtime_error(missing, tmp_path):
    tokenizer = make_tokenizer("qwen2_5")
    args = DMPOConfig(output_dir=str(tmp_path), report_to=[missing], use_cpu=True, max_steps=1)
    with pytest.raises(RuntimeError) as err:  # what DPOTrainer raises (transformers' callback), so old code catches it
        DMPOTrainer(
            model=tiny_model(tokenizer),
            args=args,
            train_dataset=Dataset.from_list([agent_pair() for _ in range(2)]),
            processing_class=tokenizer,
        )
    assert isinstance(err.value, MissingTrackerError) and isinstance(err.value, ImportError)
    assert str(err.value) == (
        f"report_to={missing!r} needs {missing}, which is not installed: pip install 'dmpo-trl[tracking]' "
        f"(or pip install {missing})"
    )


def test_train_command_says_it_in_one_line_before_reading_data(missing, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    never_read = tmp_path / "missing.jsonl"  # the error comes first, so this file is never opened
    recipe.write_text(
        yaml.safe_dump(
            {"model_name_or_path": "default", "data_files": [str(never_read)], "use_cpu": True, "bf16": False}
        )
    )
    code = cli_main(["train", "--config", str(recipe), "--output_dir", str(tmp_path / "out"), "--report_to", missing])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [
        f"dmpo-trl train: report_to={missing!r} needs {missing}, which is not installed: "
        f"pip install 'dmpo-trl[tracking]' (or pip install {missing})"
    ]


def test_installed_or_absent_trackers_pass(monkeypatch):
    from dmpo_trl.core.trackers import check_report_to

    monkeypatch.setattr(transformers.integrations, "is_tensorboard_available", lambda: True)
    check_report_to(["tensorboard"])
    check_report_to([])
    check_report_to("none")
