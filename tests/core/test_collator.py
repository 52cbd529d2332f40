"""DataCollatorForDMPO and DMPOBatch on hand-built examples, token by token, for the padded and the packed layout."""

import pytest
import torch
from transformers.data.data_collator import DataCollatorMixin

from dmpo_trl.core.collator import DataCollatorForDMPO, DMPOBatch
from dmpo_trl.core.objective import chosen_action_nll, sequence_scores


PAD = 0
# prompt [11, 12]; chosen: action 0 = [21, 22], observation [31], action 1 = [23]; rejected: one action [41, 42, 43]
EX_A = {
    "prompt_ids": [11, 12],
    "chosen_ids": [21, 22, 31, 23],
    "chosen_turn_ids": [0, 0, -1, 1],
    "chosen_num_turns": 2,
    "rejected_ids": [41, 42, 43],
    "rejected_turn_ids": [0, 0, 0],
    "rejected_num_turns": 1,
}
# prompt [13]; chosen one action [24]; rejected: action 0 [44], observation [32, 33], action 1 [45, 46]
EX_B = {
    "prompt_ids": [13],
    "chosen_ids": [24],
    "chosen_turn_ids": [0],
    "chosen_num_turns": 1,
    "rejected_ids": [44, 32, 33, 45, 46],
    "rejected_turn_ids": [0, -1, -1, 1, 1],
    "rejected_num_turns": 2,
}
GAMMA = 0.5
PHI_1_OF_2 = GAMMA * (1 - GAMMA) / (1 - GAMMA**2)  # phi(1, 2) = 1/3


def collate(padding_free=False, **kw):
    return DataCollatorForDMPO(pad_token_id=PAD, gamma=GAMMA, padding_free=padding_free, **kw)([EX_A, EX_B])


def test_is_a_transformers_collator_mixin():
    collator = DataCollatorForDMPO(pad_token_id=PAD, gamma=GAMMA)
    assert isinstance(collator, DataCollatorMixin) and collator.return_tensors == "pt"
    assert torch.equal(collator([EX_A], return_tensors="pt")["input_ids"], collator.torch_call([EX_A])["input_ids"])


def test_padded_batch_token_by_token():
    b = collate()
    # rows: chosen A, chosen B, rejected A, rejected B
    assert b["input_ids"].tolist() == [
        [11, 12, 21, 22, 31, 23],
        [13, 24, PAD, PAD, PAD, PAD],
        [11, 12, 41, 42, 43, PAD],
        [13, 44, 32, 33, 45, 46],
    ]
    assert b["attention_mask"].tolist() == [[1] * 6, [1, 1, 0, 0, 0, 0], [1] * 5 + [0], [1] * 6]
    assert b["completion_mask"].tolist() == [
        [0, 0, 1, 1, 0, 1],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 1, 0, 0, 1, 1],
    ]
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 0, PHI_1_OF_2],
            [0, 1, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 1, 0, 0, PHI_1_OF_2, PHI_1_OF_2],
        ]
    )
    assert torch.allclose(b["dmpo_weights"], expected.float(), atol=1e-7) and b["dmpo_weights"].dtype == torch.float32
    assert b["num_turns"].tolist() == [2, 1, 1, 2] and b["kept_turns"].tolist() == [2, 1, 1, 2]
    assert "ref_chosen_logps" not in b


def test_truncation_drops_whole_trailing_actions_and_keeps_weights():
    b = collate(max_length=5)  # chosen A (6 tokens) loses action 1 and the observation before it
    assert b["input_ids"][0].tolist() == [11, 12, 21, 22, PAD]
    assert b["kept_turns"].tolist() == [1, 1, 1, 1] and b["num_turns"].tolist() == [2, 1, 1, 2]
    assert b["input_ids"][3].tolist() == [13, 44, PAD, PAD, PAD]  # rejected B keeps action 0 only
    assert b["dmpo_weights"][3].tolist() == [0, 1, 0, 0, 0]  # phi(0, T=2) = 1: T stays the real count
    with pytest.raises(ValueError, match="keeps no action"):
        DataCollatorForDMPO(pad_token_id=PAD, gamma=GAMMA, max_length=2)([EX_A])


def test_reference_scores_and_pad_to_multiple_of():
    a, b = (
        dict(EX_A, ref_chosen_logps=-1.5, ref_rejected_logps=-2.0),
        dict(EX_B, ref_chosen_logps=-3.0, ref_rejected_logps=-4.0),
    )
    batch = DataCollatorForDMPO(pad_token_id=PAD, gamma=GAMMA, pad_to_multiple_of=4)([a, b])
    assert batch["ref_chosen_logps"].tolist() == [-1.5, -3.0] and batch["ref_rejected_logps"].tolist() == [-2.0, -4.0]
    assert batch["input_ids"].size(1) == 8


def test_packed_batch_holds_the_same_sequences():
    padded, packed = collate(), collate(padding_free=True, packing="single_row")
    assert "attention_mask" not in packed and packed["input_ids"].size(0) == 1
    seq = packed["sequence_ids"][0]
    for i in range(4):
        real = padded["attention_mask"][i].bool()
        assert packed["input_ids"][0][seq == i].tolist() == padded["input_ids"][i][real].tolist()
        assert packed["dmpo_weights"][0][seq == i].tolist() == padded["dmpo_weights"][i][real].tolist()
        assert packed["position_ids"][0][seq == i].tolist() == list(range(int(real.sum())))


@pytest.mark.parametrize("packing", ["bins", "single_row"])
def test_batch_reader_gives_the_same_numbers_for_both_layouts(packing):
    padded, packed = DMPOBatch(collate()), DMPOBatch(collate(padding_free=True, packing=packing))
    torch.manual_seed(0)

    table = -torch.rand(4, 8, dtype=torch.float64)  # log-prob of token `pos` of sequence `i`, the same in both layouts

    def logps_for(batch):  # aligned with input_ids[:, 1:] (entry k scores token k + 1), as the fused LM head returns
        out = torch.zeros(batch.inputs["input_ids"].shape, dtype=torch.float64)
        if batch.packed:
            seq, pos = batch.inputs["sequence_ids"], batch.inputs["position_ids"]
            out[seq >= 0] = table[seq[seq >= 0], pos[seq >= 0]]
        else:
            out = table[:, : out.size(1)].clone()
        return out[:, 1:]

    lp_padded, lp_packed = logps_for(padded), logps_for(packed)
    # hand-computed from the table: S = sum of the phi-weighted log-probs of each sequence's action tokens
    w = PHI_1_OF_2
    expected_chosen = [table[0, 2] + table[0, 3] + w * table[0, 5], table[1, 1]]
    expected_rejected = [table[2, 2] + table[2, 3] + table[2, 4], table[3, 1] + w * (table[3, 4] + table[3, 5])]
    for batch, lp in ((padded, lp_padded), (packed, lp_packed)):
        chosen, rejected = sequence_scores(batch, lp)
        assert torch.allclose(chosen, torch.stack(expected_chosen)) and torch.allclose(
            rejected, torch.stack(expected_rejected)
        )
        nll = chosen_action_nll(batch, lp)  # the sft term: every chosen action token of the batch
        assert torch.allclose(nll, -(table[0, 2] + table[0, 3] + table[0, 5] + table[1, 1]) / 4)
        m_chosen, m_rejected = batch.side_masks()
        assert int(m_chosen.sum()) == 4 and int(m_rejected.sum()) == 6
        assert int(batch.real_tokens()) == 6 + 2 + 5 + 6 and int(batch.action_tokens()) == 10
        labels = batch.labels()
        assert int((labels != -100).sum()) == 10  # action tokens only
    assert packed.model_inputs().keys() == {"input_ids", "position_ids"}
    assert padded.model_inputs().keys() == {"input_ids", "attention_mask"}


def test_batch_without_weights_names_the_collator():
    with pytest.raises(ValueError, match="DataCollatorForDMPO"):
        DMPOBatch({"input_ids": torch.zeros(2, 3, dtype=torch.long)})
