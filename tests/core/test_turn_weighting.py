"""`turn_weighting="uniform"`: multi-turn DPO (every action weight 1, observations masked) in the same trainer."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.core.collator import DataCollatorForDMPO
from dmpo_trl.core.objective import dmpo_loss
from dmpo_trl.core.rows.tokenization import tokenize_pair
from dmpo_trl.core.weights import dmpo_turn_weights, turn_weight
from dmpo_trl.testing import dataset_rows, tiny_model
from tests.core.helpers import make_args


# [chosen; rejected]: chosen has T=2 (tokens 1-2 = action 0, token 4 = action 1); rejected T=3 (tokens 1, 3, 4)
TURN_IDS = torch.tensor([[-1, 0, 0, -1, 1], [-1, 0, -1, 1, 2]])
NUM_TURNS = torch.tensor([2, 3])
# per-token log-probs; the prompt/observation positions hold values that must not count
POLICY = torch.tensor([[-7.0, -1.0, -0.75, -3.0, -0.25], [-5.0, -2.0, -9.0, -0.75, -3.0]])
REFERENCE = torch.tensor([[-1.0, -1.5, -1.0, -1.0, -1.0], [-1.0, -1.5, -1.0, -1.0, -2.0]])


def test_uniform_weights_are_one_on_every_action_and_zero_elsewhere():
    w = dmpo_turn_weights(TURN_IDS, NUM_TURNS, gamma=0.7, turn_weighting="uniform")
    assert w.tolist() == [[0, 1, 1, 0, 1], [0, 1, 0, 1, 1]]
    assert turn_weight(torch.arange(4), torch.tensor(4), 0.3, "uniform").tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="turn_weighting"):
        turn_weight(torch.arange(2), torch.tensor(2), 0.3, "linear")
    with pytest.raises(ValueError):
        turn_weight(torch.tensor([2]), torch.tensor(2), 0.3, "uniform")


def test_uniform_loss_hand_computed():
    # chosen log-ratios on action tokens: +0.5, +0.25 (action 0), +0.75 (action 1) -> S_w = 1.5
    # rejected: -0.5 (action 0), +0.25 (action 1), -1.0 (action 2)                -> S_l = -1.25
    # beta = 0.5: loss = -log sigmoid(0.5 * (1.5 - (-1.25))) = log(1 + exp(-1.375)) = 0.225413
    w = dmpo_turn_weights(TURN_IDS, NUM_TURNS, gamma=0.5, turn_weighting="uniform")
    out = dmpo_loss(POLICY, REFERENCE, w, beta=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1.375)), abs=1e-7)
    assert out.losses.item() == pytest.approx(0.225413, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.75) and out.rejected_rewards.item() == pytest.approx(-0.625)
    # DMPO on the same pair differs (gamma 0.5: chosen phi = 1, 1/3; rejected phi = 1, 3/7, 1/7)
    dmpo = dmpo_loss(POLICY, REFERENCE, dmpo_turn_weights(TURN_IDS, NUM_TURNS, 0.5), beta=0.5)
    s_w, s_l = 0.75 + 0.75 / 3, -0.5 + 0.25 * 3 / 7 - 1.0 / 7
    assert dmpo.losses.item() == pytest.approx(math.log1p(math.exp(-0.5 * (s_w - s_l))), abs=1e-6)
    assert abs(dmpo.losses.item() - out.losses.item()) > 0.05


def test_collator_uniform_padded_and_packed_agree():
    rows = [
        {
            "prompt_ids": [5, 6],
            "chosen_ids": [7, 8, 9, 10],
            "rejected_ids": [11, 12, 13],
            "chosen_turn_ids": [0, 0, -1, 1],
            "rejected_turn_ids": [0, -1, 1],
            "chosen_num_turns": 2,
            "rejected_num_turns": 2,
        }
    ]
    padded = DataCollatorForDMPO(pad_token_id=0, gamma=0.7, turn_weighting="uniform")(rows)
    assert padded["dmpo_weights"].tolist() == [[0, 0, 1, 1, 0, 1], [0, 0, 1, 0, 1, 0]]
    packed = DataCollatorForDMPO(pad_token_id=0, gamma=0.7, turn_weighting="uniform", padding_free=True)(rows)
    assert sorted(packed["dmpo_weights"][packed["sequence_ids"] >= 0].tolist()) == sorted(
        padded["dmpo_weights"][padded["attention_mask"].bool()].tolist()
    )
    with pytest.raises(ValueError, match="turn_weighting"):
        DataCollatorForDMPO(pad_token_id=0, gamma=0.7, turn_weighting="flat")


def independent_uniform_loss(policy, ref, tok, rows, beta):
    """Multi-turn DPO from raw logits: sum of action-token log-ratios per side, no trainer code involved."""
    losses = []
    for i, row in enumerate(rows):
        out = tokenize_pair(tok, row, row=i)
        scores = []
        for side in ("chosen", "rejected"):
            ids = torch.tensor([out["prompt_ids"] + out[f"{side}_ids"]])
            is_action = [False] * len(out["prompt_ids"]) + [t >= 0 for t in out[f"{side}_turn_ids"]]
            with torch.no_grad():
                lp = F.log_softmax(policy(ids).logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])[:, 0]
                lr = F.log_softmax(ref(ids).logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])[:, 0]
            scores.append(sum((lp[k - 1] - lr[k - 1]).item() for k in range(1, len(ids[0])) if is_action[k]))
        losses.append(math.log1p(math.exp(-beta * (scores[0] - scores[1]))))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("padding_free", [False, True])
def test_trainer_uniform_equals_independent_multi_turn_dpo(tmp_path, tok, padding_free):
    rows = dataset_rows(6, seed=3)
    assert any(len(r["chosen"]) > 2 for r in rows)  # several actions per side: uniform and DMPO differ
    policy, ref = tiny_model(tok, seed=0), tiny_model(tok, seed=1)
    expected = independent_uniform_loss(policy, ref, tok, rows, beta=0.5)
    losses = {}
    for weighting in ("uniform", "dmpo"):
        trainer = DMPOTrainer(
            model=copy.deepcopy(policy),
            ref_model=copy.deepcopy(ref),
            args=make_args(tmp_path, gamma=0.7, beta=0.5, turn_weighting=weighting, padding_free=padding_free),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        trainer.model.eval()
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
        losses[weighting] = trainer.compute_loss(trainer.model, batch).item()
    assert losses["uniform"] == pytest.approx(expected, abs=1e-5)
    assert abs(losses["uniform"] - losses["dmpo"]) > 1e-4


def test_config_and_custom_collator_checks(tmp_path, tok):
    with pytest.raises(ValueError, match="turn_weighting"):
        DMPOConfig(output_dir=str(tmp_path), turn_weighting="linear", report_to=[])
    collator = DataCollatorForDMPO(pad_token_id=tok.pad_token_id, gamma=0.7, turn_weighting="dmpo")
    with pytest.raises(ValueError, match="turn_weighting"):
        DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path, turn_weighting="uniform"),
            data_collator=collator,
            train_dataset=Dataset.from_list(dataset_rows(2)),
            processing_class=tok,
        )


def test_precomputed_reference_cache_tracks_turn_weighting(tmp_path, tok):
    rows = dataset_rows(4, seed=2)
    ref = tiny_model(tok, seed=9)
    scores = {}
    for weighting in ("dmpo", "uniform"):
        trainer = DMPOTrainer(
            model=tiny_model(tok),
            ref_model=copy.deepcopy(ref),
            args=make_args(tmp_path, precompute_ref_log_probs=True, turn_weighting=weighting),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        online = trainer.compute_ref_log_probs(trainer.ref_model, batch)
        assert torch.allclose(batch["ref_chosen_logps"], online[0], atol=1e-5)
        scores[weighting] = batch["ref_chosen_logps"]
    assert not torch.allclose(scores["dmpo"], scores["uniform"])


# `turn_weighting="dmpo_eq16"`: the paper's printed Eq. 16, w(t, T) = (1 - gamma^(T-t)) / (1 - gamma^T).


def test_eq16_weights_hand_computed():
    # gamma 0.5, T 3: (1 - 1/8) / (7/8) = 1, (1 - 1/4) / (7/8) = 6/7, (1 - 1/2) / (7/8) = 4/7
    w = turn_weight(torch.arange(3), torch.tensor(3), 0.5, "dmpo_eq16")
    assert w.tolist() == pytest.approx([1.0, 6 / 7, 4 / 7], abs=1e-12)
    # the derivation's phi is the same times gamma^t: 1, 3/7, 1/7
    phi = turn_weight(torch.arange(3), torch.tensor(3), 0.5, "dmpo")
    assert phi.tolist() == pytest.approx([1.0, 3 / 7, 1 / 7], abs=1e-12)
    # limits: gamma = 1 -> (T - t) / T; gamma = 0 -> 1 on every action (multi-turn DPO); w(0, T) = 1
    assert turn_weight(torch.arange(4), torch.tensor(4), 1.0, "dmpo_eq16").tolist() == [1.0, 0.75, 0.5, 0.25]
    assert turn_weight(torch.arange(4), torch.tensor(4), 0.0, "dmpo_eq16").tolist() == [1.0, 1.0, 1.0, 1.0]
    near_one = turn_weight(torch.arange(4), torch.tensor(4), 1 - 1e-9, "dmpo_eq16")
    assert near_one.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25], abs=1e-7)
    near_zero = turn_weight(torch.arange(4), torch.tensor(4), 1e-9, "dmpo_eq16")
    assert near_zero.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0], abs=1e-7)
    with pytest.raises(ValueError, match="gamma"):
        turn_weight(torch.arange(2), torch.tensor(2), 1.5, "dmpo_eq16")
    with pytest.raises(ValueError):
        turn_weight(torch.tensor([3]), torch.tensor(3), 0.5, "dmpo_eq16")


def test_eq16_loss_hand_computed():
    # the pair of `test_uniform_loss_hand_computed`, gamma 0.5: chosen T=2 -> w = 1, (1-0.5)/(1-0.25) = 2/3;
    # rejected T=3 -> w = 1, 6/7, 4/7. S_w = 0.75 + 0.75 * 2/3 = 1.25; S_l = -0.5 + 0.25 * 6/7 - 1.0 * 4/7
    w = dmpo_turn_weights(TURN_IDS, NUM_TURNS, gamma=0.5, turn_weighting="dmpo_eq16")
    assert w[0].tolist() == pytest.approx([0, 1, 1, 0, 2 / 3])
    assert w[1].tolist() == pytest.approx([0, 1, 0, 6 / 7, 4 / 7])
    s_w, s_l = 1.25, -0.5 + 0.25 * 6 / 7 - 4 / 7
    out = dmpo_loss(POLICY, REFERENCE, w, beta=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-0.5 * (s_w - s_l))), abs=1e-6)


def test_eq16_through_config_and_trainer(tmp_path, tok):
    assert make_args(tmp_path).turn_weighting == "dmpo"  # the derivation's phi stays the default
    rows = dataset_rows(6, seed=3)
    policy, ref = tiny_model(tok, seed=0), tiny_model(tok, seed=1)
    losses = {}
    for weighting, gamma in (("dmpo_eq16", 0.0), ("uniform", 0.0), ("dmpo_eq16", 0.7), ("dmpo", 0.7)):
        trainer = DMPOTrainer(
            model=copy.deepcopy(policy),
            ref_model=copy.deepcopy(ref),
            args=make_args(tmp_path, gamma=gamma, beta=0.5, turn_weighting=weighting),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        trainer.model.eval()
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
        losses[(weighting, gamma)] = trainer.compute_loss(trainer.model, batch).item()
    # gamma 0: Eq. 16 weights every action 1, i.e. multi-turn DPO; at 0.7 it differs from the derivation's phi
    assert losses[("dmpo_eq16", 0.0)] == pytest.approx(losses[("uniform", 0.0)], abs=1e-6)
    assert abs(losses[("dmpo_eq16", 0.7)] - losses[("dmpo", 0.7)]) > 1e-4


def test_model_card_names_the_eq16_weighting(tmp_path, tok):
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path, gamma=0.5, turn_weighting="dmpo_eq16"),
        train_dataset=Dataset.from_list(dataset_rows(2)),
        processing_class=tok,
    )
    trainer.create_model_card(model_name="tiny-eq16")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "turn_weighting=dmpo_eq16" in card and "printed Eq. 16" in card
