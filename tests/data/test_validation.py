"""`validate_dataset` / `dmpo-trl validate`: the report's numbers, checked against independent computations."""

from __future__ import annotations

import json

import pytest

from dmpo_trl.cli import main as cli_main
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.normalize import normalize_pair
from dmpo_trl.data.convert import from_eto_pairs
from dmpo_trl.data.io import write_records
from dmpo_trl.data.validation import validate_dataset
from dmpo_trl.testing import agent_pair
from tests.data import records as rec


@pytest.fixture(scope="module")
def rows():
    return [agent_pair(1, 3), agent_pair(2, 2, system=False), agent_pair(4, 1), from_eto_pairs([rec.eto_pair()])[0]]


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def expected_side(tokenizer, prompt, side, max_length, tools=None):
    """Independently: (T, kept actions, tokens, kept tokens, action tokens) of one trajectory in ChatML.

    A ChatML action is its content plus <|im_end|>; the trajectory ends with "<|im_end|>\\n" (one token after the
    last end-of-turn token); the end of action j is the rendering of the messages up to j, minus that newline.
    """
    actions = [j for j, m in enumerate(side) if m["role"] == "assistant"]
    ends = [n_tokens(tokenizer, render(tokenizer, prompt + side[: j + 1], tools=tools)) - 1 for j in actions]
    total = n_tokens(tokenizer, render(tokenizer, prompt + side, tools=tools))
    kept = len(actions) if max_length is None or total <= max_length else sum(e <= max_length for e in ends)
    kept_tokens = total if kept == len(actions) else ends[kept - 1]
    action_tokens = sum(n_tokens(tokenizer, side[j]["content"]) + 1 for j in actions)
    return len(actions), kept, total, kept_tokens, action_tokens


def first_action_end(tokenizer, row) -> int:
    """The largest, over both sides, token position where the first action ends: the tightest max_length that works."""
    row = normalize_pair(row)  # as the trainer reads it: JSON-string arguments and tools parsed
    tools = row.get("tools")
    return max(expected_side(tokenizer, row["prompt"], row[s][:1], None, tools)[2] - 1 for s in ("chosen", "rejected"))


def collapses(tokenizer, row, max_length) -> bool:
    """Independently: truncation at max_length leaves both sides with the same rendered text (same kept actions)."""
    kept_text = []
    for side in ("chosen", "rejected"):
        _, kept, total, _, _ = expected_side(tokenizer, row["prompt"], row[side], max_length)
        actions = [j for j, m in enumerate(row[side]) if m["role"] == "assistant"]
        cut = len(row[side]) if max_length is None or total <= max_length else actions[kept - 1] + 1
        kept_text.append(render(tokenizer, row["prompt"] + row[side][:cut]))
    return kept_text[0] == kept_text[1]


def long_row() -> dict:
    """Five actions a side with long observations: truncated at the lengths the ETO pair needs."""
    row = agent_pair(5, 5)
    for side in ("chosen", "rejected"):
        for m in row[side]:
            if m["role"] == "user":
                m["content"] = "Observation: a door and a coin on the table. " * 12
    return row


@pytest.mark.parametrize("extra", [None, 0, 40, 400])
def test_report_numbers_match_an_independent_count(tok, rows, extra):
    rows = [*rows, long_row()]
    max_length = None if extra is None else max(first_action_end(tok, r) for r in rows) + extra
    # Rows whose kept trajectories are the same carry no preference: an error, or skipped and counted
    dead = [i for i, r in enumerate(rows) if collapses(tok, r, max_length)]
    if dead:
        with pytest.raises(DMPODataError, match=rf"^row {dead[0]}: no preference left after truncation"):
            validate_dataset(rows, tok, max_length=max_length, progress=False)
    report = validate_dataset(rows, tok, max_length=max_length, skip_invalid=True, progress=False)
    assert [s.row for s in report.skipped] == dead
    live = [r for i, r in enumerate(rows) if i not in dead]
    n = len(live)
    per_side = {s: [expected_side(tok, r["prompt"], r[s], max_length) for r in live] for s in ("chosen", "rejected")}
    assert (report.rows, report.pairs) == (5, n)
    for side, values in per_side.items():
        turns = [v[0] for v in values]
        dist = report.actions[side]
        assert (dist.min, dist.max, dist.mean) == (min(turns), max(turns), sum(turns) / n)
        assert dist.histogram == {t: turns.count(t) for t in sorted(set(turns))}
        assert [report.tokens[side].min, report.tokens[side].max] == [
            min(v[2] for v in values),
            max(v[2] for v in values),
        ]
    both = per_side["chosen"] + per_side["rejected"]
    assert report.total_tokens == sum(v[2] for v in both)
    assert report.action_tokens == sum(v[4] for v in both)
    assert report.action_token_share == pytest.approx(report.action_tokens / report.total_tokens)
    assert report.actions_total == sum(v[0] for v in both)
    assert report.actions_dropped == sum(v[0] - v[1] for v in both)
    assert report.tokens_dropped == sum(v[2] - v[3] for v in both)
    pairs = zip(per_side["chosen"], per_side["rejected"], strict=True)
    truncated = sum(1 for c, r in pairs if c[1] < c[0] or r[1] < r[0])
    assert report.pairs_truncated == truncated
    prompts = [n_tokens(tok, render(tok, r["prompt"], add_generation_prompt=True)) for r in live]
    assert (report.tokens["prompt"].min, report.tokens["prompt"].max) == (min(prompts), max(prompts))
    if extra in (0, 40):  # these cases truncate some but not all actions, and make the ETO pair (row 3) collapse
        assert 0 < report.actions_dropped < report.actions_total and report.pairs_truncated > 0
        assert dead == [3]
    else:
        assert dead == []


def test_report_format_and_json(tok, rows):
    max_length = max(first_action_end(tok, r) for r in rows)
    report = validate_dataset(
        rows + [{**agent_pair(), "chosen": []}], tok, max_length=max_length, skip_invalid=True, progress=False
    )
    text = report.format()
    assert text.splitlines()[0] == "rows: 5    valid pairs: 3    skipped: 2"  # the ETO pair (3) collapses, 4 is bad
    assert f"truncation at max_length={max_length}: {report.pairs_truncated}/3 pairs" in text
    assert text.splitlines()[-2].startswith("skipped row 3: no preference left after truncation")
    assert text.splitlines()[-1] == "skipped row 4, chosen: empty chosen: the chosen continuation has no messages"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["pairs"] == 3 and data["skipped"][1] == {"row": 4, "reason": report.skipped[1].reason}
    assert data["actions"]["chosen"]["histogram"] == {str(k): v for k, v in report.actions["chosen"].histogram.items()}


def test_datasets_dataset_and_file_inputs(tok, rows, tmp_path):
    from datasets import Dataset

    expected = validate_dataset(rows, tok, progress=False)
    path = tmp_path / "rows.jsonl"
    write_records(rows, path)
    assert validate_dataset(path, tok, progress=False) == expected
    assert validate_dataset(Dataset.from_list(rows), tok, progress=False) == expected


@pytest.mark.parametrize("skip_invalid", [None, True])
def test_streamed_files_report_what_the_loaded_dataset_reports(tok, rows, tmp_path, skip_invalid):
    """`validate_files` (streamed, what `dmpo-trl validate` runs) and the loader's dataset: the same report, the
    same skipped rows with the same file and row, in two files."""
    from dmpo_trl.data.loading import load_preference_files
    from dmpo_trl.data.validation import validate_files

    bad = dict(rows[0], rejected=[])  # structural: skipped by the loader
    overlong = long_row()  # no action fits: skipped by the trainer's rule
    write_records([rows[0], bad, rows[1]], tmp_path / "a.jsonl")
    write_records([overlong, rows[2]], tmp_path / "b.jsonl")
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    max_length = len(tok.apply_chat_template(overlong["prompt"])) + 1
    if skip_invalid is None:
        with pytest.raises(DMPODataError, match="a.jsonl: row 1, rejected"):
            validate_files(files, tok, max_length, skip_invalid, progress=False)
        files = files[1:]
    loaded = load_preference_files(files, skip_invalid=skip_invalid)
    expected = validate_dataset(loaded, tok, max_length, skip_invalid, progress=False, per_row=True)
    report = validate_files(files, tok, max_length, skip_invalid, progress=False, per_row=True)
    assert report == expected
    assert report.pairs < report.rows and [s.source for s in report.skipped] == [s.source for s in expected.skipped]


@pytest.fixture(scope="module")
def tokenizer_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return path


def test_cli_validate(tok, rows, tmp_path, tokenizer_dir, capsys):
    rows = rows[:3]  # the ETO pair collapses at this max_length (test_report_numbers_match_an_independent_count)
    path = tmp_path / "rows.json"
    write_records(rows, path)
    max_length = max(first_action_end(tok, r) for r in rows)
    assert (
        cli_main(["validate", str(path), "--model", str(tokenizer_dir), "--max-length", str(max_length), "--json"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(validate_dataset(rows, tok, max_length, progress=False).to_dict()))
    assert printed["actions_dropped"] > 0
    assert cli_main(["validate", str(path), "--model", str(tokenizer_dir)]) == 0
    assert capsys.readouterr().out.startswith("rows: 3    valid pairs: 3    skipped: 0\n")


def test_cli_validate_bad_row_exit_code_and_skip(rows, tmp_path, tokenizer_dir, capsys):
    path = tmp_path / "rows.jsonl"
    write_records(rows + [{**agent_pair(), "rejected": [{"role": "user", "content": "hi"}]}], path)
    assert cli_main(["validate", str(path), "--model", str(tokenizer_dir)]) == 1
    assert "row 4, rejected: no assistant action in rejected (roles: 'user')" in capsys.readouterr().err
    assert cli_main(["validate", str(path), "--model", str(tokenizer_dir), "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "valid pairs: 4    skipped: 1" in out and f"skipped {path}: row 4, rejected: no assistant action" in out


def test_cli_validate_converts_other_formats(tmp_path, tokenizer_dir, capsys):
    path = tmp_path / "eto.json"
    path.write_text(json.dumps([rec.eto_pair()]))
    assert cli_main(["validate", str(path), "--from", "eto", "--model", str(tokenizer_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 1 and report["actions"]["chosen"]["histogram"] == {"3": 1}


@pytest.mark.slow
def test_report_agrees_with_the_trainer_and_converted_rows_train(tok, rows, tmp_path):
    """Converted rows (ETO, ShareGPT with tool calls, OpenAI with tool calls), loaded as users load them, go through
    DMPOTrainer; its truncation statistics equal the validation report's at the same max_length."""
    from datasets import load_dataset

    from dmpo_trl import DMPOConfig, DMPOTrainer
    from dmpo_trl.data.convert import from_openai, from_sharegpt
    from dmpo_trl.testing import tiny_model

    converted = [
        *rows,
        long_row(),  # truncated at this max_length
        *from_sharegpt([rec.llamafactory_pair()]),
        *from_openai([dict(zip(("chosen", "rejected"), rec.openai_conversations(), strict=True))]),
    ]
    path = tmp_path / "rows.jsonl"
    write_records(converted, path)
    dataset = load_dataset("json", data_files=str(path), split="train")
    max_length = max(first_action_end(tok, r) for r in converted) + 40
    args = DMPOConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        max_length=max_length,
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        skip_invalid_pairs=True,  # the ETO pair (row 3) keeps only its shared first action at this max_length
    )
    trainer = DMPOTrainer(model=tiny_model(tok), args=args, train_dataset=dataset, processing_class=tok)
    report = validate_dataset(dataset, tok, max_length=max_length, skip_invalid=True, progress=False)
    stats = trainer.dmpo_data_stats["train"]
    assert [s.row for s in report.skipped] == [3] and stats["pairs_skipped"] == 1
    assert (stats["pairs"], stats["pairs_truncated"], stats["actions"], stats["actions_dropped"]) == (
        report.pairs,
        report.pairs_truncated,
        report.actions_total,
        report.actions_dropped,
    )
    assert report.actions_dropped > 0
    trainer.train()
