"""Standard (plain-text) rows: one action per side, DPOTrainer's tokens exactly (explicit and implicit prompt)."""

import pytest
from trl.data_utils import extract_prompt

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import check_pair, prepare_pair
from dmpo_trl.core.rows.plain_text import split_plain_prompt, tokenize_plain_pair
from dmpo_trl.testing import make_tokenizer


ROWS = [
    {"prompt": "Task: find the coin.", "chosen": " Action: look around", "rejected": " Action: move north"},
    {"prompt": "Beautiful is better than", "chosen": " ugly.", "rejected": " the moon.<|im_end|>"},  # EOS present
    {"chosen": "Task: find the coin. Action: look", "rejected": "Task: find the coin. Action: jump"},  # implicit
    {"chosen": "abc", "rejected": "abcd"},  # implicit, one completion a prefix of the other (extract_prompt's quirk)
]


def dpo_tokens(tok, row):
    """DPOTrainer 1.16's `_prepare_dataset` steps for a standard row, with TRL's own functions."""
    from trl.data_utils import _tokenize, common_prefix_length

    if "prompt" not in row:
        row = extract_prompt(row)
    row = {k: (v if k == "prompt" or v.endswith(tok.eos_token) else v + tok.eos_token) for k, v in row.items()}
    prompt = _tokenize(tok, row["prompt"])["input_ids"]
    chosen = _tokenize(tok, row["prompt"] + row["chosen"])["input_ids"]
    rejected = _tokenize(tok, row["prompt"] + row["rejected"])["input_ids"]
    n = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
    return prompt[:n], chosen[n:], rejected[n:]


@pytest.mark.parametrize("family", ["qwen2_5", "llama3_1"])  # llama3_1's tokenizer adds no BOS itself; both are BPE
@pytest.mark.parametrize("i", range(len(ROWS)))
def test_tokens_are_dpotrainers_and_every_completion_token_is_action_0(family, i):
    tok = make_tokenizer(family)
    row = dict(ROWS[i])
    row["rejected"] = row["rejected"].replace("<|im_end|>", tok.eos_token)
    out = tokenize_plain_pair(tok, row, row=i)
    prompt, chosen, rejected = dpo_tokens(tok, row)
    assert (out["prompt_ids"], out["chosen_ids"], out["rejected_ids"]) == (prompt, chosen, rejected)
    for side in ("chosen", "rejected"):
        assert out[f"{side}_turn_ids"] == [0] * len(out[f"{side}_ids"]) and out[f"{side}_num_turns"] == 1
        assert out[f"{side}_ids"][-1] == tok.eos_token_id
        assert out[f"{side}_ids"].count(tok.eos_token_id) == 1  # EOS appended once, never doubled


def test_implicit_prompt_follows_extract_prompt():
    for row in ROWS[2:]:
        expected = extract_prompt(dict(row))
        assert split_plain_prompt(row) == (expected["prompt"], expected["chosen"], expected["rejected"])


def test_prepare_pair_accepts_standard_rows_and_truncation_drops_the_action(tok):
    out = prepare_pair(tok, ROWS[0], row=0, max_length=1024)
    assert out["chosen_kept_turns"] == out["rejected_kept_turns"] == 1
    check_pair(ROWS[0], row=0)
    with pytest.raises(DMPODataError, match="no action fits within max_length=4"):
        prepare_pair(tok, ROWS[0], row=0, max_length=4)


@pytest.mark.parametrize(
    "row,side,match",
    [
        ({"prompt": "p", "chosen": "a", "rejected": None}, "rejected", "'rejected' is missing"),
        ({"prompt": ["p"], "chosen": "a", "rejected": "b"}, "prompt", "'prompt' is of type list"),
        ({"prompt": "p", "chosen": 3, "rejected": "b"}, "chosen", "'chosen' is of type int"),
    ],
)
def test_mixed_rows_name_the_side(row, side, match):
    with pytest.raises(DMPODataError, match=match) as err:
        check_pair(row, row=7)
    assert err.value.row == 7 and err.value.side == side
