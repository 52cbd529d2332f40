"""`dmpo-trl validate --config RECIPE` reports what `dmpo-trl train --config RECIPE` trains: the same rows (files with
a BOM, a folder, rows skipped at reading and at tokenization), and per row the same token counts, before and after
truncation, as the batches the trainer's collator builds."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import yaml

from dmpo_trl.cli import main as cli_main
from dmpo_trl.cli.train import build_trainer, parse_args
from dmpo_trl.data.io import write_records
from dmpo_trl.testing import agent_pair, dataset_rows
from tests.cli.helpers import base_recipe


def test_validate_reports_the_rows_and_tokens_train_trains(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = dataset_rows(7, seed=3)
    long_obs = agent_pair(4, 2)
    long_obs["chosen"][1]["content"] = "Observation: " + "a very long page " * 40  # truncated at max_length
    too_long = agent_pair(1, 1)
    too_long["prompt"][-1]["content"] = "Task: " + "find the coin " * 60  # keeps no action: skipped
    (tmp_path / "pairs").mkdir()
    write_records(rows[:3] + [long_obs], tmp_path / "pairs" / "a.jsonl")
    write_records(rows[3:5] + [{**rows[5], "chosen": []}], tmp_path / "pairs" / "b.parquet")
    (tmp_path / "c.jsonl").write_bytes(
        b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in [too_long, rows[6]]).encode()
    )
    recipe = base_recipe(
        ws, data_files=["pairs", "c.jsonl"], max_length=160, skip_invalid_pairs=True, output_dir="out"
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["validate", "--config", "recipe.yaml", "--json", "--per-row"]) == 0
    report = json.loads(out.getvalue())
    trainer = build_trainer(*parse_args(["--config", "recipe.yaml"]))

    # the same rows: 9 read, one skipped while reading (empty chosen), one at tokenization (no action fits)
    assert report["rows"] == 9 and report["pairs"] == len(trainer.train_dataset) == 7
    assert [(s["file"].split("/")[-1], s["row"]) for s in report["skipped"]] == [("b.parquet", 2), ("c.jsonl", 0)]
    assert trainer.dmpo_data_stats["train"]["pairs_skipped"] == 1  # the loader left out the other one, listed above
    assert [(r["file"].split("/")[-1], r["row"]) for r in report["per_row"]] == [
        ("a.jsonl", 0),
        ("a.jsonl", 1),
        ("a.jsonl", 2),
        ("a.jsonl", 3),
        ("b.parquet", 0),
        ("b.parquet", 1),
        ("c.jsonl", 1),
    ]
    # per row, the same tokens: whole trajectories, and what is left after truncation in the collated batch
    prepared = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(copy.deepcopy(prepared))
    lengths = batch["attention_mask"].sum(1).tolist()
    n = len(prepared)
    for i, (row, ex) in enumerate(zip(report["per_row"], prepared, strict=True)):
        assert row["prompt_tokens"] == len(ex["prompt_ids"])
        assert row["tokens"] == {
            "chosen": len(ex["prompt_ids"]) + len(ex["chosen_ids"]),
            "rejected": len(ex["prompt_ids"]) + len(ex["rejected_ids"]),
        }
        assert row["kept_tokens"] == {"chosen": lengths[i], "rejected": lengths[n + i]}
        assert row["kept_actions"] == {"chosen": ex["chosen_kept_turns"], "rejected": ex["rejected_kept_turns"]}
    assert report["per_row"][3]["kept_tokens"]["chosen"] < report["per_row"][3]["tokens"]["chosen"]  # truncated
    stats = trainer.dmpo_data_stats["train"]
    assert (stats["pairs_truncated"], stats["actions_dropped"]) == (
        report["pairs_truncated"],
        report["actions_dropped"],
    )


def test_validate_truncates_where_the_trainer_does_by_default():
    from dmpo_trl import DMPOConfig
    from dmpo_trl.cli.validate import TRAINER_MAX_LENGTH

    assert DMPOConfig(output_dir="unused", use_cpu=True, bf16=False, report_to=[]).max_length == TRAINER_MAX_LENGTH


def test_validate_config_flags_win_over_the_recipe(ws, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_records(dataset_rows(3), tmp_path / "pairs.jsonl")
    recipe = base_recipe(ws, data_files="pairs.jsonl", max_length=60)  # one string, as YAML allows
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert cli_main(["validate", "--config", "recipe.yaml", "--json", "--skip-invalid"]) == 0
    assert json.loads(capsys.readouterr().out)["max_length"] == 60
    assert cli_main(["validate", "--config", "recipe.yaml", "--json", "--max-length", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["max_length"], report["pairs"], report["actions_dropped"]) == (None, 3, 0)
    assert cli_main(["validate", "--config", "missing.yaml"]) == 1
    assert capsys.readouterr().err.strip() == "dmpo-trl validate: recipe 'missing.yaml' does not exist"
