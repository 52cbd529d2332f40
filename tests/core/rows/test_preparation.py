"""`dmpo_trl.core.rows.preparation` and the pair checks it runs: empty input, all rows skipped, streamed skips, pairs that
truncation leaves without a preference, templates that drop tool calls, merged Arrow schemas."""

from __future__ import annotations

import copy

import pytest
from datasets import Dataset, IterableDataset

from dmpo_trl import DMPOTrainer
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import prepare_pair
from dmpo_trl.core.rows.preparation import prepare_dataset, skipped_summary
from dmpo_trl.core.rows.tokenization import tokenize_pair
from dmpo_trl.testing import agent_pair, dataset_rows, tiny_model
from tests.core.helpers import make_args


def streamed(rows):
    return IterableDataset.from_generator(lambda: iter(copy.deepcopy(rows)))


@pytest.mark.parametrize("kind", ["dataset", "streamed"])
def test_empty_dataset_is_an_error_before_the_model_loads(tmp_path, tok, kind):
    empty = Dataset.from_list([]) if kind == "dataset" else streamed([])
    # The model name does not exist: the data error comes first, before anything is loaded
    with pytest.raises(DMPODataError, match=r"^the train dataset has no rows: there is nothing to train on$"):
        DMPOTrainer(model="no/such-model", args=make_args(tmp_path), train_dataset=empty, processing_class=tok)
    with pytest.raises(DMPODataError, match=r"^the eval dataset has no rows"):
        DMPOTrainer(
            model="no/such-model",
            args=make_args(tmp_path),
            train_dataset=Dataset.from_list(dataset_rows(2)),
            eval_dataset=empty,
            processing_class=tok,
        )


def test_all_rows_skipped_is_an_error_that_says_so(tmp_path, tok):
    rows = dataset_rows(3)
    for row in rows:
        row["rejected"] = [{"role": "user", "content": "Observation: nothing."}]
    with pytest.raises(DMPODataError) as err:
        DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path, skip_invalid_pairs=True),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
    message = str(err.value)
    for part in (
        "all 3 rows of the train dataset were skipped",
        "skip_invalid_pairs=True",
        "nothing is left to train",
    ):
        assert part in message
    assert "3x rejected: no assistant action in rejected" in message and "(rows 0, 1, 2)" in message


def test_streamed_dataset_counts_and_logs_what_it_skips(tmp_path, tok, caplog):
    rows = dataset_rows(6)
    rows[1]["chosen"] = []
    rows[4]["rejected"] = [{"role": "user", "content": "Observation: nothing."}]
    with caplog.at_level("WARNING", logger="dmpo_trl.core.rows.preparation"):
        trainer = DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path, skip_invalid_pairs=True, max_steps=1, per_device_train_batch_size=2),
            train_dataset=streamed(rows),
            processing_class=tok,
        )
        kept = list(trainer.train_dataset)
        again = list(trainer.train_dataset)  # a second pass (epoch) counts nothing twice
    assert len(kept) == len(again) == 4
    expected = [tokenize_pair(tok, r) for i, r in enumerate(rows) if i not in (1, 4)]
    assert [r["chosen_ids"] for r in kept] == [e["chosen_ids"] for e in expected]
    assert trainer.dmpo_data_stats["train"]["pairs_skipped"] == 2
    lines = [  # accelerate's logger may prefix "[RANK 0] "
        r.getMessage().removeprefix("[RANK 0] ") for r in caplog.records if "streamed train dataset" in r.getMessage()
    ]
    assert lines == [
        "Skipped row 1 of the streamed train dataset (skip_invalid_pairs=True; 1 skipped so far): chosen: empty "
        "chosen: the chosen continuation has no messages",
        "Skipped row 4 of the streamed train dataset (skip_invalid_pairs=True; 2 skipped so far): rejected: no "
        "assistant action in rejected (roles: 'user')",
    ]
    trainer.train()  # and it trains on the stream


def test_streamed_dataset_with_no_usable_row_is_an_error(tmp_path, tok):
    rows = dataset_rows(2)
    for row in rows:
        row["chosen"] = []
    with pytest.raises(DMPODataError, match=r"^all 2 rows of the streamed train dataset were skipped"):
        DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path, skip_invalid_pairs=True),
            train_dataset=streamed(rows),
            processing_class=tok,
        )


def shared_start_pair() -> dict:
    """Chosen and rejected share their first action and observation, then differ (as ETO pairs do)."""
    row = agent_pair(3, 3)
    row["rejected"][:2] = copy.deepcopy(row["chosen"][:2])
    return row


def test_truncation_that_leaves_identical_actions_is_flagged(tmp_path, tok):
    row = shared_start_pair()
    out = tokenize_pair(tok, row)
    prompt = len(out["prompt_ids"])
    # Longest max_length that keeps only the first (shared) action on both sides
    second_ends = [
        prompt + out[f"{s}_turn_ids"].index(1) + out[f"{s}_turn_ids"].count(1) for s in ("chosen", "rejected")
    ]
    cut = min(second_ends) - 1
    first = prepare_pair(tok, row, 0, max_length=cut + 1)  # one more token: a side keeps two actions, fine
    assert max(first["chosen_kept_turns"], first["rejected_kept_turns"]) == 2
    with pytest.raises(DMPODataError) as err:
        prepare_pair(tok, row, 5, max_length=cut)
    assert (err.value.row, err.value.side) == (5, None)
    reason = err.value.reason
    assert reason.startswith(f"no preference left after truncation at max_length={cut}")
    assert "the same 1 action(s)" in reason and "(of 3 and 3)" in reason and "raise max_length" in reason
    identical = agent_pair(2, 2)
    identical["rejected"] = copy.deepcopy(identical["chosen"])
    with pytest.raises(DMPODataError, match=r"^row 0: chosen and rejected are identical, token for token"):
        prepare_pair(tok, identical, 0)
    # skipped and counted like any unusable pair
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path, max_length=cut, skip_invalid_pairs=True),
        train_dataset=Dataset.from_list([row, agent_pair(1, 1), identical]),
        processing_class=tok,
    )
    assert trainer.dmpo_data_stats["train"]["pairs_skipped"] == 2 and len(trainer.train_dataset) == 1


SMOLLM2_LIKE = (  # SmolLM2-135M-Instruct's template renders `content` only: tool calls vanish
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_template_that_drops_tool_calls_is_refused_and_names_the_flag(tok):
    tokenizer = copy.deepcopy(tok)
    tokenizer.chat_template = SMOLLM2_LIKE
    row = agent_pair(2, 1)
    row["chosen"][0] = {
        "role": "assistant",
        "content": "Searching.",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": '{"q": "coin"}'}}],
    }
    row["chosen"][1] = {"role": "tool", "content": "a coin"}
    with pytest.raises(DMPODataError) as err:
        prepare_pair(tokenizer, row, 3)
    assert (err.value.row, err.value.side) == (3, "chosen")
    assert err.value.reason.startswith("the chat template drops tool calls or tool results")
    assert "--chat_template_path FILE" in err.value.reason
    prepare_pair(tokenizer, agent_pair(2, 1))  # rows without tools are fine with that template
    prepare_pair(tok, row)  # and the row is fine with a template that renders tool calls (TRL's Qwen2.5)


def test_tool_results_need_their_content_rendered_not_tool_call_syntax(tok):
    """A row whose observations are `tool` messages (no tool calls) trains on a template that renders their content
    but has no tool-call syntax, and is refused by one that drops tool messages, with the reason for that row."""
    row = agent_pair(2, 1)
    row["chosen"][1] = {"role": "tool", "content": "a coin"}
    content_only = copy.deepcopy(tok)
    content_only.chat_template = SMOLLM2_LIKE
    assert "a coin" in content_only.decode(prepare_pair(content_only, row)["chosen_ids"])
    no_tools = copy.deepcopy(tok)
    no_tools.chat_template = SMOLLM2_LIKE.replace(
        "{% for message in messages %}", "{% for message in messages if message['role'] != 'tool' %}"
    )
    with pytest.raises(DMPODataError) as err:
        prepare_pair(no_tools, row, 4)
    assert (err.value.row, err.value.side) == (4, "chosen")
    assert err.value.reason.startswith("the chat template drops tool results (rendered, a tool message loses")


def test_merged_arrow_schema_is_reported_and_trained_as_written(tmp_path, tok, caplog):
    def with_call(args):
        row = agent_pair(2, 1)
        row["chosen"][0] = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": args}}],
        }
        row["chosen"][1] = {"role": "tool", "content": "ok"}
        return row

    rows = [with_call({"query": "red"}), with_call({"id": "B01"})]
    with caplog.at_level("WARNING", logger="dmpo_trl.core.rows.preparation"):
        prepared, _ = prepare_dataset(Dataset.from_list(rows), tok, make_args(tmp_path), "train")
    assert "stores chosen[].tool_calls[].function.arguments as Arrow structs" in caplog.text
    assert prepared["chosen_ids"] == [tokenize_pair(tok, r)["chosen_ids"] for r in rows]


def test_skipped_summary_groups_whole_reasons_and_names_rows():
    reasons = ["", "a: x: y", "", "a: x: y", "b"]
    assert skipped_summary(reasons) == "2x a: x: y (rows 1, 3); 1x b (rows 4)"
    assert skipped_summary(reasons, row_label=lambda i: f"f.jsonl row {i + 10}") == (
        "2x a: x: y (f.jsonl row 11, f.jsonl row 13); 1x b (f.jsonl row 14)"
    )
    many = [f"reason {i}" for i in range(25)]
    text = skipped_summary(many)
    assert "1x reason 19 (rows 19)" in text and "reason 20" not in text
    assert text.endswith("and 5 other reasons (`dmpo-trl validate --skip-invalid` lists them all)")
