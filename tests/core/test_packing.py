"""Padding-free (packed) DMPO batches: exact equality with padded batches, sequence isolation, trainer end to end."""

import copy
import logging

import pytest
import torch
from datasets import Dataset

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.core.attention import VARLEN_SDPA
from dmpo_trl.core.packing import build_packed_batch, pack_rows, segment_sum
from dmpo_trl.testing import agent_pair, dataset_rows, tiny_model
from tests.core.helpers import action_log_probs, make_args


# attention path -> (attn_implementation the model is built with, packed layout)
PATHS = {
    "varlen_single_row": ("sdpa", "single_row"),  # sdpa is switched to dmpo_varlen_sdpa by the trainer
    "varlen_bins": ("sdpa", "bins"),
    "sdpa_dense_bins": ("sdpa-dense", "bins"),  # transformers' own block-diagonal mask from position_ids
    "eager_bins": ("eager", "bins"),
}


def make_trainer(tmp_path, tok, rows, padding_free, path="varlen_single_row", **kw):
    attn, packing = PATHS[path]
    dense = attn == "sdpa-dense"
    policy = tiny_model(tok, seed=0, attn_implementation="sdpa" if dense else attn)
    ref = tiny_model(tok, seed=1, attn_implementation="sdpa" if dense else attn)
    trainer = DMPOTrainer(
        model=policy,
        ref_model=ref,
        args=make_args(tmp_path, padding_free=padding_free, **kw),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    if padding_free:
        if dense:  # keep transformers' sdpa: packed isolation then comes from its position-id mask
            trainer.model.set_attn_implementation("sdpa")
            trainer.ref_model.set_attn_implementation("sdpa")
        trainer.data_collator.packing = packing
    return trainer


def batch_of(trainer, n):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def loss_scores_grads(trainer, batch):
    trainer.model.zero_grad()
    with torch.no_grad():
        chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)  # the DMPO scores of the policy
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    return loss.detach(), torch.cat([chosen, rejected]).detach(), grads


COMPOSITIONS = {
    "mixed_lengths": lambda: dataset_rows(6, seed=3),
    "single_action_pairs": lambda: [agent_pair(1, 1, system=bool(i % 2)) for i in range(4)],
    "one_long_many_short": lambda: [agent_pair(6, 1), agent_pair(1, 1), agent_pair(2, 1), agent_pair(1, 2)],
    "single_pair": lambda: [agent_pair(2, 5)],
}


CASES = [(c, "varlen_single_row") for c in COMPOSITIONS] + [
    (c, p) for c in ("mixed_lengths", "single_action_pairs") for p in PATHS if p != "varlen_single_row"
]


@pytest.mark.parametrize("composition,path", CASES)
def test_packed_equals_padded_loss_scores_and_gradients(tmp_path, tok, path, composition):
    rows = COMPOSITIONS[composition]()
    padded = make_trainer(tmp_path / "a", tok, rows, padding_free=False, path=path)
    packed = make_trainer(tmp_path / "b", tok, rows, padding_free=True, path=path)
    n = len(rows)
    pad_batch, pack_batch = batch_of(padded, n), batch_of(packed, n)
    assert "attention_mask" not in pack_batch and pack_batch["input_ids"].size(0) <= 2 * n
    if PATHS[path][1] == "single_row":
        assert pack_batch["input_ids"].size(0) == 1
    # every real token of the padded batch is in the packed batch, once
    assert int((pack_batch["sequence_ids"] >= 0).sum()) == int(pad_batch["attention_mask"].sum())
    loss_a, scores_a, grads_a = loss_scores_grads(padded, pad_batch)
    loss_b, scores_b, grads_b = loss_scores_grads(packed, pack_batch)
    assert abs(loss_a.item() - loss_b.item()) < 1e-5
    # scores are float32 sums of hundreds of log-probs (|S| ~ 100-200): equal up to float32 rounding of the sum
    assert torch.allclose(scores_a, scores_b, atol=1e-5, rtol=1e-6)
    assert scores_a.abs().min() > 0  # real scores, not zeros on both sides
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-5, rtol=0), name
    assert any(g.abs().max() > 1e-4 for g in grads_a.values())


def test_sequence_at_row_boundary_and_row_layout():
    """Lengths 10, 6, 4 (+ 3, 3): bins of capacity 10 put 6+4 into one exactly full row, so a sequence ends at the
    row end and another starts right after its neighbour; the layout keeps every token and restarts positions."""
    lengths = [10, 6, 4, 3, 3]
    assert pack_rows(lengths, "bins") == [[0], [1, 2], [3, 4]]
    assert pack_rows(lengths, "single_row") == [[0, 1, 2, 3, 4]]
    ids = [[100 + i] * n for i, n in enumerate(lengths)]
    turns = [[-1] * 2 + [0] * (n - 2) for n in lengths]
    batch = build_packed_batch(ids, turns, [1] * 5, pad_token_id=0, gamma=0.7, packing="bins")
    assert batch["input_ids"].shape == (3, 10)
    assert batch["sequence_ids"][1].tolist() == [1] * 6 + [2] * 4  # exactly full row
    assert batch["position_ids"][1].tolist() == list(range(6)) + list(range(4))
    assert batch["sequence_ids"][2].tolist() == [3] * 3 + [4] * 3 + [-1] * 4
    assert batch["position_ids"][2].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3]  # padding is its own segment
    assert (batch["completion_mask"][batch["position_ids"] == 0] == 0).all()
    assert (batch["dmpo_weights"][batch["sequence_ids"] < 0] == 0).all()


def test_token_budget_bounds_rows():
    lengths = [10, 6, 4, 3, 3]  # 26 tokens
    assert pack_rows(lengths, "single_row", max_row_tokens=26) == [[0, 1, 2, 3, 4]]
    assert pack_rows(lengths, "single_row", max_row_tokens=13) == [[0, 3], [1, 2, 4]]  # two exactly full rows
    assert pack_rows(lengths, "single_row", max_row_tokens=4) == pack_rows(lengths, "bins")  # at least the longest
    assert pack_rows(lengths, "bins", max_row_tokens=16) == [[0, 1], [2, 3, 4]]
    with pytest.raises(ValueError, match="max_row_tokens"):
        pack_rows(lengths, "bins", max_row_tokens=0)
    ids = [[100 + i] * n for i, n in enumerate(lengths)]
    turns = [[-1] * 2 + [0] * (n - 2) for n in lengths]
    batch = build_packed_batch(ids, turns, [1] * 5, pad_token_id=0, gamma=0.7, packing="single_row", max_row_tokens=13)
    assert batch["input_ids"].shape == (2, 13) and (batch["sequence_ids"] >= 0).all()


def test_token_budget_rows_train_exactly_like_padded(tmp_path, tok):
    rows = dataset_rows(6, seed=3)
    padded = make_trainer(tmp_path / "a", tok, rows, padding_free=False)
    packed = make_trainer(tmp_path / "b", tok, rows, padding_free=True)
    lengths = batch_of(padded, 6)["attention_mask"].sum(1).tolist()
    budget = max(sum(lengths) // 3, max(lengths))
    packed.data_collator.max_row_tokens = budget  # several rows of per-sequence attention
    batch = batch_of(packed, 6)
    assert batch["input_ids"].size(0) >= 3 and batch["input_ids"].size(1) <= budget
    loss_a, scores_a, grads_a = loss_scores_grads(padded, batch_of(padded, 6))
    loss_b, scores_b, grads_b = loss_scores_grads(packed, batch)
    # each side's reference scores come from its own attention (the store is keyed on the attention implementation),
    # so the two losses differ by float32 rounding of both passes, not only of the policy's
    assert abs(loss_a.item() - loss_b.item()) < 2e-6
    assert torch.allclose(scores_a, scores_b, atol=1e-5, rtol=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-5, rtol=0), name


def boundary_rows(tok):
    """Two pairs whose bins layout is [B_rejected] [the two longest others, exactly filling the row] [the last one]."""
    from dmpo_trl.core.rows.tokenization import tokenize_pair

    def lengths(row):
        out = tokenize_pair(tok, row)
        return len(out["prompt_ids"]) + len(out["chosen_ids"]), len(out["prompt_ids"]) + len(out["rejected_ids"])

    a, b = agent_pair(1, 1, system=False), agent_pair(1, 2, system=False)
    b["chosen"][0]["content"] = "Thought: short.\nAction: go"
    shorts = sorted([*lengths(a), lengths(b)[0]], reverse=True)
    while lengths(b)[1] < shorts[0] + shorts[1]:
        b["rejected"][1]["content"] += " look"  # lengthen the observation: one token per word with this tokenizer
    assert lengths(b)[1] == shorts[0] + shorts[1]
    return [a, b]


def test_bins_batch_exercises_a_full_row_end_to_end(tmp_path, tok):
    """Trainer-level: a batch whose bins layout has a sequence ending exactly at the row end next to a neighbour."""
    rows = boundary_rows(tok)
    padded = make_trainer(tmp_path / "a", tok, rows, padding_free=False, path="varlen_bins")
    packed = make_trainer(tmp_path / "b", tok, rows, padding_free=True, path="varlen_bins")
    pad_batch, pack_batch = batch_of(padded, 2), batch_of(packed, 2)
    seq = pack_batch["sequence_ids"]
    full_multi = [r for r in range(seq.size(0)) if (seq[r] >= 0).all() and len(set(seq[r].tolist())) > 1]
    assert full_multi, f"no exactly full row with two sequences in {seq.tolist()}"
    loss_a, scores_a, grads_a = loss_scores_grads(padded, pad_batch)
    loss_b, scores_b, grads_b = loss_scores_grads(packed, pack_batch)
    assert abs(loss_a.item() - loss_b.item()) < 1e-5 and torch.allclose(scores_a, scores_b, atol=1e-5, rtol=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-5, rtol=0), name


@pytest.mark.parametrize("path", list(PATHS))
def test_perturbing_one_sequence_leaves_the_others_unchanged(tmp_path, tok, path):
    rows = dataset_rows(4, seed=5)
    trainer = make_trainer(tmp_path, tok, rows, padding_free=True, path=path)
    batch = batch_of(trainer, 4)
    seq = batch["sequence_ids"]
    row = next(r for r in range(seq.size(0)) if len(set(seq[r].tolist()) - {-1}) > 1)
    target = int(seq[row, 0])  # the first sequence of a row with several: the others of that row follow it
    perturbed = dict(batch)
    ids = batch["input_ids"].clone()
    where = seq == target
    ids[where] = (ids[where] * 7 + 3) % 400  # other tokens, same length
    perturbed["input_ids"] = ids
    with torch.no_grad():
        lp_a = action_log_probs(trainer.model, batch)
        lp_b = action_log_probs(trainer.model, perturbed)
    others = (seq[:, 1:] >= 0) & (seq[:, 1:] != target)
    target_tokens = (seq[:, 1:] == target) & (batch["completion_mask"][:, 1:] == 1)
    assert (seq[row] >= 0).logical_and(seq[row] != target).any()  # other sequences after the target, same row
    assert (lp_a[others] - lp_b[others]).abs().max() <= 1e-6
    assert (lp_a[target_tokens] - lp_b[target_tokens]).abs().max() > 1e-3  # the perturbation does change its own


def test_first_token_after_a_boundary_is_never_scored(tmp_path, tok):
    """Even if a collator marked a sequence's first token as an action, the fused head (which shifts labels inside a
    row) must not score it as the continuation of the previous sequence."""
    trainer = make_trainer(tmp_path, tok, dataset_rows(4, seed=2), padding_free=True)
    batch = batch_of(trainer, 4)
    starts = batch["position_ids"][:, 1:] == 0
    assert starts.any()
    bad = dict(batch)
    bad["completion_mask"] = batch["completion_mask"].clone()
    bad["completion_mask"][batch["position_ids"] == 0] = 1
    with torch.no_grad():
        lp = action_log_probs(trainer.model, bad)
    assert (lp[starts] == 0).all()
    assert (lp[bad["completion_mask"][:, 1:].bool() & ~starts] != 0).all()


def test_trainer_refuses_leaky_model_on_first_batch(tmp_path, tok):
    trainer = make_trainer(tmp_path, tok, dataset_rows(4), padding_free=True, path="sdpa_dense_bins")
    base = trainer.model
    original = base.forward
    base.forward = lambda *a, position_ids=None, **k: original(*a, **k)
    with pytest.raises(ValueError, match="padding_free=True"):
        trainer.compute_loss(trainer.model, batch_of(trainer, 4))


def test_segment_sum_ignores_padding_and_is_differentiable():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    seg = torch.tensor([[0, 0, 1], [2, -1, -1]])
    out = segment_sum(values, seg, 3)
    assert out.tolist() == [3.0, 3.0, 4.0]
    out.sum().backward()
    assert values.grad.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]


def test_padding_free_trainer_matches_padded_over_two_steps_without_disabled_warning(tmp_path, tok, caplog):
    rows = dataset_rows(8, seed=11)
    runs = {}
    for padding_free in (False, True):
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            trainer = DMPOTrainer(
                model=tiny_model(tok),
                args=make_args(
                    tmp_path / str(padding_free), padding_free=padding_free, optim="sgd", learning_rate=0.5
                ),
                train_dataset=Dataset.from_list(rows),
                processing_class=tok,
            )
            assert not any("padding_free" in r.getMessage() for r in caplog.records)
        assert trainer.padding_free is padding_free and trainer.args.padding_free is padding_free
        trainer.train()
        runs[padding_free] = trainer
    a, b = runs[False], runs[True]
    assert b.model.config._attn_implementation == VARLEN_SDPA
    losses_a = [h["loss"] for h in a.state.log_history if "loss" in h]
    losses_b = [h["loss"] for h in b.state.log_history if "loss" in h]
    assert len(losses_a) == 2 and losses_a == pytest.approx(losses_b, abs=1e-5)
    assert losses_a[0] != pytest.approx(losses_a[1], abs=1e-4)  # the first step really changed the model
    for key in (
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "action_token_share",
        "turns/rejected",
        "logits/chosen",
        "mean_token_accuracy",
        "entropy",
        "num_tokens",
    ):
        assert a.state.log_history[0][key] == pytest.approx(b.state.log_history[0][key], rel=1e-6, abs=1e-5), key
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), n


def test_precomputed_reference_and_sft_term_with_padding_free(tmp_path, tok):
    rows = dataset_rows(6, seed=4)
    ref = tiny_model(tok, seed=9)
    kw = dict(train_dataset=Dataset.from_list(rows), processing_class=tok)
    common = dict(precompute_ref_log_probs=True, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    padded = DMPOTrainer(
        model=tiny_model(tok), ref_model=copy.deepcopy(ref), args=make_args(tmp_path / "a", **common), **kw
    )
    packed = DMPOTrainer(
        model=tiny_model(tok),
        ref_model=copy.deepcopy(ref),
        args=make_args(tmp_path / "b", padding_free=True, **common),
        **kw,
    )
    pad_batch, pack_batch = batch_of(padded, 6), batch_of(packed, 6)
    assert "sequence_ids" in pack_batch and "ref_chosen_logps" in pack_batch
    assert torch.allclose(pad_batch["ref_chosen_logps"], pack_batch["ref_chosen_logps"], atol=1e-5)
    assert torch.allclose(pad_batch["ref_rejected_logps"], pack_batch["ref_rejected_logps"], atol=1e-5)
    online = DMPOTrainer(
        model=tiny_model(tok), ref_model=copy.deepcopy(ref), args=make_args(tmp_path / "c", padding_free=True), **kw
    )
    ref_w, ref_l = online.compute_ref_log_probs(online.ref_model, pack_batch)  # works on packed batches
    assert torch.allclose(ref_w, pad_batch["ref_chosen_logps"], atol=1e-5)
    assert torch.allclose(ref_l, pad_batch["ref_rejected_logps"], atol=1e-5)
    assert padded.compute_loss(padded.model, pad_batch).item() == pytest.approx(
        packed.compute_loss(packed.model, pack_batch).item(), abs=1e-5
    )


def test_config_accepts_padding_free(tmp_path):
    assert DMPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, padding_free=True).padding_free


def test_sliding_window_model_keeps_transformers_mask_and_stays_exact(tmp_path, tok):
    """A model with sliding-window layers is not switched (its window would be lost); packed batches then rely on
    transformers' position-id mask, in bins, and still equal the padded batch."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def model(seed):
        torch.manual_seed(seed)
        cfg = Qwen2Config(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            use_sliding_window=True,
            sliding_window=48,
            max_window_layers=0,
            pad_token_id=tok.pad_token_id,
            attn_implementation="sdpa",
        )
        return Qwen2ForCausalLM(cfg).float()

    rows = dataset_rows(4, seed=6)
    runs = {}
    for padding_free in (False, True):
        trainer = DMPOTrainer(
            model=model(0),
            ref_model=model(1),
            train_dataset=Dataset.from_list(rows),
            args=make_args(tmp_path / str(padding_free), padding_free=padding_free),
            processing_class=tok,
        )
        runs[padding_free] = (trainer, batch_of(trainer, 4))
    packed_trainer, packed_batch = runs[True]
    assert (
        packed_trainer.model.config._attn_implementation == "sdpa" and packed_trainer.data_collator.packing == "bins"
    )
    assert packed_batch["position_ids"].max() > 48  # the window really cuts into the sequences
    loss_a, scores_a, grads_a = loss_scores_grads(*runs[False])
    loss_b, scores_b, grads_b = loss_scores_grads(*runs[True])
    assert abs(loss_a.item() - loss_b.item()) < 1e-5 and torch.allclose(scores_a, scores_b, atol=1e-5, rtol=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], atol=1e-5, rtol=0), name
