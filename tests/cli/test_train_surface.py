"""`dmpo-trl train` takes what `trl dpo` takes: every flag in its help, TRL's dataset mixtures, configs and splits."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from datasets import IterableDataset

from dmpo_trl.cli import main as cli_main
from dmpo_trl.cli.recipe_data import describe_data_source, load_preference_datasets
from dmpo_trl.cli.train import build_trainer, parse_args
from dmpo_trl.data.io import write_records
from dmpo_trl.testing import dataset_rows
from tests.cli.helpers import base_recipe, write_recipe


def options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", help_text))


def test_help_lists_every_flag_of_trl_dpo_and_dmpos_own():
    from trl.scripts.dpo import make_parser as trl_dpo_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        cli_main(["train", "--help"])
    assert done.value.code == 0
    ours, theirs = options(out.getvalue()), options(trl_dpo_parser().format_help())
    assert len(theirs) > 300 and not theirs - ours, sorted(theirs - ours)
    for own in ("--gamma", "--skip_invalid_pairs", "--data_files", "--accelerate-config", "--datasets", "--streaming"):
        assert own in ours, own


@pytest.fixture
def two_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_records(dataset_rows(6, seed=1), a)
    write_records(dataset_rows(4, seed=2), b)
    return a, b


def mixture_recipe(ws, tmp_path, two_files, **extra):
    a, b = two_files
    recipe = base_recipe(ws, data_files=None, max_steps=2, output_dir=str(tmp_path / "out"), **extra)
    recipe["datasets"] = [
        {"path": "json", "data_files": str(a), "split": "train"},
        {"path": "json", "data_files": str(b), "split": "train", "columns": ["prompt", "chosen", "rejected"]},
    ]
    return write_recipe(tmp_path / "mix.yaml", recipe)


def test_recipe_datasets_mixture_trains(ws, tmp_path, two_files):
    script_args, training_args, model_args = parse_args(["--config", str(mixture_recipe(ws, tmp_path, two_files))])
    assert [d.path for d in script_args.datasets] == ["json", "json"]
    train, eval_ds = load_preference_datasets(script_args, want_eval=False)
    assert len(train) == 10 and eval_ds is None  # the two files, concatenated as trl's get_dataset does
    assert describe_data_source(script_args) == "json, json"
    trainer = build_trainer(script_args, training_args, model_args)
    trainer.train()
    assert trainer.state.global_step == 2


def test_mixture_test_split_size_and_streaming(ws, tmp_path, two_files):
    recipe = mixture_recipe(ws, tmp_path, two_files, test_split_size=0.2)
    script_args, *_ = parse_args(["--config", str(recipe)])
    train, eval_ds = load_preference_datasets(script_args, want_eval=True)
    assert (len(train), len(eval_ds)) == (8, 2)
    script_args, *_ = parse_args(["--config", str(mixture_recipe(ws, tmp_path, two_files)), "--streaming", "true"])
    train, _ = load_preference_datasets(script_args, want_eval=False)
    assert isinstance(train, IterableDataset) and len(list(train)) == 10
    script_args, *_ = parse_args(["--config", str(mixture_recipe(ws, tmp_path, two_files))])
    with pytest.raises(ValueError, match="mixture has no split 'test': set `test_split_size`"):
        load_preference_datasets(script_args, want_eval=True)


def test_dataset_name_with_config_splits_and_streaming(ws, tmp_path):
    """`--dataset_name DIR --dataset_config ... --dataset_train_split ... --dataset_test_split ...`, as `trl dpo`."""
    root = tmp_path / "hub_like"
    for config, n in (("small", 4), ("large", 6)):
        write_records(dataset_rows(n, seed=3), root / config / "fit.jsonl")
        write_records(dataset_rows(2, seed=4), root / config / "holdout.jsonl")
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(
            f"- config_name: {c}\n  data_files:\n  - split: fit\n    path: {c}/fit.jsonl\n"
            f"  - split: holdout\n    path: {c}/holdout.jsonl\n"
            for c in ("small", "large")
        )
        + "---\n"
    )
    recipe = base_recipe(ws, data_files=None, dataset_name=str(root), dataset_config="large")
    flags = ["--dataset_train_split", "fit", "--dataset_test_split", "holdout"]
    script_args, *_ = parse_args(["--config", str(write_recipe(tmp_path / "r.yaml", recipe)), *flags])
    train, eval_ds = load_preference_datasets(script_args, want_eval=True)
    assert (len(train), len(eval_ds)) == (6, 2)
    script_args, *_ = parse_args(
        ["--config", str(tmp_path / "r.yaml"), *flags, "--dataset_streaming", "true", "--dataset_config", "small"]
    )
    train, _ = load_preference_datasets(script_args, want_eval=False)
    assert isinstance(train, IterableDataset) and len(list(train)) == 4


def test_mixture_and_data_files_are_exclusive(ws, tmp_path, two_files):
    recipe = base_recipe(ws)
    recipe["datasets"] = [{"path": "json", "data_files": str(two_files[0])}]
    with pytest.raises(ValueError, match="either `data_files` .* or a `datasets` mixture"):
        parse_args(["--config", str(write_recipe(tmp_path / "bad.yaml", recipe))])


def test_chat_template_path_replaces_the_tokenizers_template(ws, tmp_path):
    from dmpo_trl.testing import TEMPLATE_DIR

    template = TEMPLATE_DIR / "qwen2_5_training.jinja"
    recipe = write_recipe(tmp_path / "t.yaml", base_recipe(ws, max_steps=1, output_dir=str(tmp_path / "o")))
    script_args, training_args, model_args = parse_args(
        ["--config", str(recipe), "--chat_template_path", str(template)]
    )
    trainer = build_trainer(script_args, training_args, model_args)
    assert trainer.processing_class.chat_template == template.read_text()  # the marker path tokenizes the rows
