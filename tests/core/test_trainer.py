"""DMPOTrainer end to end on tiny models: exact loss, reference modes, gradients, GA, model card, config checks."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, load_dataset

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.core.rows.tokenization import tokenize_pair
from dmpo_trl.data.io import write_records
from dmpo_trl.testing import agent_pair, dataset_rows, make_tokenizer, tiny_model
from tests.core.helpers import action_log_probs, make_args


def batch_of(trainer, n, split=None):
    ds = split if split is not None else trainer.train_dataset
    return trainer.data_collator([ds[i] for i in range(n)])


def independent_loss(policy, ref, tok, rows, gamma, beta):
    """DMPO from raw logits, one sequence at a time, weights by the spec's formula: no trainer code involved."""
    losses = []
    for i, row in enumerate(rows):
        out = tokenize_pair(tok, row, row=i)
        scores = []
        for side in ("chosen", "rejected"):
            ids = torch.tensor([out["prompt_ids"] + out[f"{side}_ids"]])
            turn = [-1] * len(out["prompt_ids"]) + out[f"{side}_turn_ids"]
            T = out[f"{side}_num_turns"]
            with torch.no_grad():
                lp = F.log_softmax(policy(ids).logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])[:, 0]
                lr = F.log_softmax(ref(ids).logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])[:, 0]
            s = 0.0
            for t in range(T):
                phi = gamma**t * (1 - gamma ** (T - t)) / (1 - gamma**T) if gamma < 1 else (T - t) / T
                s += phi * sum((lp[k - 1] - lr[k - 1]).item() for k in range(1, len(turn)) if turn[k] == t)
            scores.append(s)
        margin = beta * (scores[0] - scores[1])
        losses.append(math.log1p(math.exp(-margin)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("gamma", [0.0, 0.7, 1.0])
def test_loss_equals_independent_computation_with_separate_reference(tmp_path, tok, gamma):
    rows = dataset_rows(6, seed=3)
    policy, ref = tiny_model(tok, seed=0), tiny_model(tok, seed=1)
    expected = independent_loss(policy, ref, tok, rows, gamma, beta=0.5)
    trainer = DMPOTrainer(
        model=policy,
        ref_model=ref,
        args=make_args(tmp_path, gamma=gamma, beta=0.5),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    trainer.model.eval()
    loss = trainer.compute_loss(trainer.model, batch_of(trainer, 6))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert abs(expected - math.log(2)) > 1e-3  # the reference really differs


def test_step0_loss_is_ln2_when_policy_equals_reference(tmp_path, tok):
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path, precompute_ref_log_probs=False),
        train_dataset=Dataset.from_list(dataset_rows(8)),
        processing_class=tok,
    )
    assert trainer.ref_model is not None  # a frozen copy, not a reload from `config.name_or_path`
    loss = trainer.compute_loss(trainer.model, batch_of(trainer, 8))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_one_action_per_side_equals_trl_dpo(tmp_path):
    """T = 1 on both sides: DMPO is DPO on the action tokens. Llama-3's template puts nothing after <|eot_id|>, so
    TRL's DPO completion is exactly the action (content + end-of-turn)."""
    from trl import DPOConfig, DPOTrainer

    tok = make_tokenizer("llama3_1")
    rows = [agent_pair(1, 1) for _ in range(4)]
    for i, r in enumerate(rows):
        r["rejected"][0]["content"] = f"Thought: wrong {i}.\nAction: jump"
    policy, ref = tiny_model(tok, seed=0), tiny_model(tok, seed=5)
    common = dict(
        output_dir=str(tmp_path / "o"), report_to=[], use_cpu=True, beta=0.3, gradient_checkpointing=False, bf16=False
    )
    dmpo = DMPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(ref),
        args=DMPOConfig(gamma=0.7, **common),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    dpo = DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(ref),
        args=DPOConfig(**common),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    dpo_batch = dpo.data_collator([dpo.train_dataset[i] for i in range(4)])
    dmpo_batch = batch_of(dmpo, 4)
    assert torch.equal(dpo_batch["completion_mask"].bool(), dmpo_batch["completion_mask"].bool())
    l_dmpo = dmpo.compute_loss(dmpo.model, dmpo_batch)
    l_dpo = dpo.compute_loss(dpo.model, dpo_batch)
    assert l_dmpo.item() == pytest.approx(l_dpo.item(), abs=1e-6)


def test_prompt_and_observation_tokens_get_exactly_zero_gradient(tmp_path, tok):
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        ref_model=tiny_model(tok, seed=2),
        args=make_args(tmp_path),
        train_dataset=Dataset.from_list(dataset_rows(4)),
        processing_class=tok,
    )
    captured = {}

    def keep_log_probs(module, args, kwargs, output):  # the policy's forward through TRL's fused-head protocol
        if kwargs.get("fused_lm_head") and output.log_probs.requires_grad:
            output.log_probs.retain_grad()
            captured["logps"] = output.log_probs

    handle = trainer.model.register_forward_hook(keep_log_probs, with_kwargs=True)
    batch = batch_of(trainer, 4)
    trainer.compute_loss(trainer.model, batch).backward()
    handle.remove()
    length = batch["input_ids"].size(1) - 1
    grad = captured["logps"].grad[:, -length:]  # aligned with input_ids[:, 1:]
    action = batch["completion_mask"][:, 1:].bool()
    weighted = batch["dmpo_weights"][:, 1:] > 0
    assert (grad[~action] == 0).all()
    assert (grad[weighted] != 0).all()  # every weighted action token receives gradient


def test_precomputed_reference_equals_online_and_cache_tracks_gamma(tmp_path, tok):
    path = tmp_path / "pairs.jsonl"
    write_records(dataset_rows(8, seed=4), path)
    ref = tiny_model(tok, seed=9)
    # same dataset files, same reference: the cache must not be reused across gamma or LD-DPO's alpha
    for gamma, ld_alpha in ((0.7, None), (0.3, None), (0.3, 0.5)):
        ds = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf_cache"))
        kw = dict(model=tiny_model(tok), ref_model=copy.deepcopy(ref), train_dataset=ds, processing_class=tok)
        options = dict(gamma=gamma, ld_alpha=ld_alpha)
        pre = DMPOTrainer(args=make_args(tmp_path, precompute_ref_log_probs=True, **options), **kw)
        online = DMPOTrainer(args=make_args(tmp_path, **options), **{**kw, "model": tiny_model(tok)})
        pre_batch, online_batch = batch_of(pre, 8), batch_of(online, 8)
        ref_w, ref_l = online.compute_ref_log_probs(online.ref_model, online_batch)
        assert torch.allclose(pre_batch["ref_chosen_logps"], ref_w, atol=1e-5)
        assert torch.allclose(pre_batch["ref_rejected_logps"], ref_l, atol=1e-5)
        assert pre.compute_loss(pre.model, pre_batch).item() == pytest.approx(
            online.compute_loss(online.model, online_batch).item(), abs=1e-5
        )


def test_lora_reference_is_the_base_model(tmp_path, tok):
    from peft import LoraConfig

    base = tiny_model(tok)
    frozen_base = copy.deepcopy(base)
    trainer = DMPOTrainer(
        model=base,
        args=make_args(tmp_path, max_steps=3, learning_rate=5e-2),
        train_dataset=Dataset.from_list(dataset_rows(8)),
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    assert trainer.ref_model is None
    batch = batch_of(trainer, 4)
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(2), abs=1e-6)
    trainer.train()
    ref_w, ref_l = trainer.compute_ref_log_probs(trainer.model, batch)
    independent = DMPOTrainer(
        model=tiny_model(tok, seed=7),
        ref_model=frozen_base,
        args=make_args(tmp_path),
        train_dataset=Dataset.from_list(dataset_rows(8)),
        processing_class=tok,
    )
    exp_w, exp_l = independent.compute_ref_log_probs(independent.ref_model, batch)
    assert torch.allclose(ref_w, exp_w, atol=1e-5) and torch.allclose(ref_l, exp_l, atol=1e-5)
    pol_loss = trainer.compute_loss(trainer.model, batch).item()
    assert pol_loss < math.log(2)  # the adapter moved away from the reference


def run_steps(tmp_path, tok, name, **kw):
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path / name, optim="sgd", learning_rate=0.5, **kw),
        train_dataset=Dataset.from_list(dataset_rows(8, seed=11)),
        processing_class=tok,
    )
    trainer.train()
    return trainer


def test_gradient_accumulation_1x8_equals_8x1(tmp_path, tok):
    big = run_steps(tmp_path, tok, "a", per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=1)
    acc = run_steps(tmp_path, tok, "b", per_device_train_batch_size=1, gradient_accumulation_steps=8, max_steps=1)
    for (n, p), (_, q) in zip(big.model.named_parameters(), acc.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n
    assert big.state.log_history[0]["loss"] == pytest.approx(acc.state.log_history[0]["loss"], abs=1e-5)


def test_parameters_change_and_metrics_logged(tmp_path, tok):
    start = tiny_model(tok)
    trainer = run_steps(tmp_path, tok, "c", max_steps=3, per_device_train_batch_size=4)
    changed = [
        n
        for (n, p), (_, q) in zip(trainer.model.named_parameters(), start.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(changed) == len(list(start.parameters()))
    logs = trainer.state.log_history[0]
    for key in (
        "rewards/chosen",
        "rewards/margins",
        "logps/chosen",
        "turns/chosen",
        "turns/rejected",
        "action_token_share",
        "truncation/actions_dropped",
        "truncation/pairs_truncated",
    ):
        assert key in logs, key
    assert 0 < logs["action_token_share"] < 1


def test_truncation_keeps_weights_and_is_logged(tmp_path, tok):
    rows = [agent_pair(1, 6) for _ in range(4)]
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path, max_length=120),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    stats = trainer.dmpo_data_stats["train"]
    assert stats["pairs_truncated"] == 4 and stats["actions_dropped"] > 0
    batch = batch_of(trainer, 4)
    assert batch["input_ids"].shape[1] <= 120
    rej_weights = batch["dmpo_weights"][4]
    assert rej_weights.max().item() == pytest.approx(1.0)
    assert (batch["num_turns"][4:] == 6).all() and (batch["kept_turns"][4:] < 6).all()  # T stays the real count


def test_rows_that_keep_no_action_are_dropped_with_a_warning_or_refused_in_strict_mode(tmp_path, tok, caplog):
    rows = dataset_rows(4)
    rows[2]["prompt"][-1]["content"] = "very long task " * 80
    kw = dict(model=tiny_model(tok), train_dataset=Dataset.from_list(rows), processing_class=tok)
    with caplog.at_level("WARNING", logger="dmpo_trl.core.trainer"):
        trainer = DMPOTrainer(args=make_args(tmp_path, max_length=100), **kw)  # the default, as DPOTrainer
    assert len(trainer.train_dataset) == 3 and trainer.dmpo_data_stats["train"]["pairs_skipped"] == 1
    assert "Skipped 1/4 rows of the train dataset" in caplog.text
    assert "1x chosen: no action fits within max_length=100" in caplog.text and "(rows 2)" in caplog.text
    with pytest.raises(
        ValueError, match=r"row 2, chosen: no action fits within max_length=100.*skip_invalid_pairs=False"
    ):
        DMPOTrainer(args=make_args(tmp_path, max_length=100, skip_invalid_pairs=False), **kw)
    trainer = DMPOTrainer(args=make_args(tmp_path, max_length=100, skip_invalid_pairs=True), **kw)
    assert len(trainer.train_dataset) == 3


def test_streamed_rows_that_keep_no_action_are_dropped_and_logged(tmp_path, tok, caplog):
    rows = dataset_rows(6)
    rows[2]["prompt"][-1]["content"] = "very long task " * 80
    stream = Dataset.from_list(rows).to_iterable_dataset()
    args = make_args(tmp_path, max_length=100, max_steps=1, per_device_train_batch_size=2)
    with caplog.at_level("WARNING", logger="dmpo_trl.core.rows.checks"):
        trainer = DMPOTrainer(model=tiny_model(tok), args=args, train_dataset=stream, processing_class=tok)
        kept = list(trainer.train_dataset)
    assert len(kept) == 5
    assert "Skipped row 2 of the streamed train dataset (" in caplog.text
    assert "1 skipped so far): chosen: no action fits within max_length=100" in caplog.text


def test_other_bad_rows_raise_by_default_naming_skip_invalid_pairs(tmp_path, tok):
    rows = dataset_rows(3)
    rows[1]["rejected"] = [{"role": "user", "content": "Observation: nothing."}]
    with pytest.raises(ValueError, match=r"row 1, rejected: no assistant action.*set skip_invalid_pairs=True"):
        DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )


def test_sft_term_adds_chosen_action_nll(tmp_path, tok):
    rows = dataset_rows(4)
    kw = dict(
        model=tiny_model(tok),
        ref_model=tiny_model(tok, seed=3),
        processing_class=tok,
        train_dataset=Dataset.from_list(rows),
    )
    plain = DMPOTrainer(args=make_args(tmp_path), **kw)
    mixed = DMPOTrainer(args=make_args(tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]), **kw)
    batch = batch_of(plain, 4)
    with torch.no_grad():
        per_token = action_log_probs(plain.model, batch)
    mask = batch["completion_mask"][:4, 1:].float()
    nll = -(per_token[:4] * mask).sum() / mask.sum()  # token mean over the batch's chosen actions, as DPOTrainer's
    expected = plain.compute_loss(plain.model, batch) + 0.5 * nll
    assert mixed.compute_loss(mixed.model, batch).item() == pytest.approx(expected.item(), abs=1e-5)


def test_model_card_carries_dmpo(tmp_path, tok):
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path, gamma=0.5, beta=0.2),
        train_dataset=Dataset.from_list(dataset_rows(4)),
        processing_class=tok,
    )
    trainer.create_model_card(model_name="tiny-dmpo", dataset_name="my/agent-pairs")
    card = (tmp_path / "out" / "README.md").read_text()
    for needle in (
        "dmpo",
        "Direct Multi-Turn Preference Optimization for Language Agents",
        "2406.14868",
        "@inproceedings{shi2024direct",
        "| gamma | 0.5 |",
        "| beta | 0.2 |",
        "my/agent-pairs",
    ):
        assert needle in card, needle
    # a model that is not pushed: the quick start loads the folder the card is in (by name), not model="None"
    assert 'model="None"' not in card and 'model="out"' in card
    assert str(tmp_path) not in card  # no local path in a card


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(gamma=1.5), "gamma"),
        (dict(gamma=-0.1), "gamma"),
        (dict(loss_type=["sigmoid", "dpop"]), r"Unknown loss type\(s\) \['dpop'\]"),
        (dict(truncation_mode="keep_end"), "highest DMPO weights"),
        (dict(f_divergence_type="js_divergence", precompute_ref_log_probs=True), "reference log-prob of every action"),
    ],
)
def test_config_rejects_unsupported_options(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        DMPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **kw)


def test_trainer_rejects_plain_dpo_config_and_wrong_trl(tmp_path, tok):
    from trl import DPOConfig

    from dmpo_trl.core._compat import check_trl_version

    with pytest.raises(TypeError, match="DMPOConfig"):
        DMPOTrainer(
            model=tiny_model(tok),
            args=DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True),
            train_dataset=Dataset.from_list(dataset_rows(2)),
            processing_class=tok,
        )
    for bad in ("1.15.2", "1.17.0rc1", "2.0.0"):
        with pytest.raises(ImportError, match="tested with trl>=1.16.0,<1.17.0"):
            check_trl_version(bad)
    check_trl_version("1.16.3")


def test_dataset_with_mixed_format_rows_names_the_row(tmp_path, tok):
    rows = [{"prompt": "hi", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}]
    with pytest.raises(ValueError, match=r"row 0, rejected: mixed formats: the row is standard \(plain text\)"):
        DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )


def test_trainer_applies_the_structural_checks(tmp_path, tok):
    rows = dataset_rows(3)
    rows[1]["chosen"].insert(1, {"role": "assistant", "content": "Thought: again.\nAction: look around"})
    with pytest.raises(ValueError, match=r"row 1, chosen: "):
        DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )


def test_short_last_batch_trains_and_logs(tmp_path, tok):
    """5 pairs, batch 2: the last batch holds one pair; metrics gathered per pair must not break on it."""
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path, per_device_train_batch_size=2, max_steps=-1, num_train_epochs=1),
        train_dataset=Dataset.from_list(dataset_rows(5)),
        processing_class=tok,
    )
    trainer.train()
    assert trainer.state.global_step == 3
    turns = {sum(m["role"] == "assistant" for m in r["chosen"]) for r in dataset_rows(5)}
    assert trainer.state.log_history[2]["turns/chosen"] in turns  # one pair: its own T, not a mix of halves


def test_skipped_rows_are_reported_by_their_whole_reason(tmp_path, tok, caplog):
    """Reasons that contain ': ' themselves are grouped as a whole, with the rows they come from."""
    rows = dataset_rows(5)
    for i in (1, 3):  # same reason twice
        rows[i]["rejected"] = [{"role": "user", "content": "Observation: nothing."}]
    rows[4]["chosen"] = [{"role": "assistant", "content": "Action: a"}, {"role": "assistant", "content": "Action: b"}]
    with caplog.at_level("WARNING", logger="dmpo_trl.core.rows.preparation"):
        trainer = DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path, skip_invalid_pairs=True),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
    assert len(trainer.train_dataset) == 2
    text = caplog.text
    assert "Skipped 3/5 rows" in text
    assert "2x rejected: no assistant action in rejected (roles: 'user') (rows 1, 3)" in text
    assert (
        "1x chosen: roles out of order: messages 0 and 1 are consecutive assistant actions with no observation "
        "between them (rows 4)" in text
    )


def test_dataset_preparation_runs_main_process_first(tmp_path, tok, monkeypatch):
    """Every row is tokenized inside TRL's main-process-first context (the other ranks then read the cache)."""
    import contextlib

    import trl.trainer.utils

    import dmpo_trl.core.rows.preparation

    state = {"inside": False, "rows": [], "entered": 0}

    @contextlib.contextmanager
    def recording():
        state["entered"] += 1
        state["inside"] = True
        try:
            yield
        finally:
            state["inside"] = False

    original = dmpo_trl.core.rows.preparation.prepare_row

    def spy(example, idx, **kwargs):
        state["rows"].append(state["inside"])
        return original(example, idx, **kwargs)

    monkeypatch.setattr(trl.trainer.utils, "global_then_local_main_first", recording)  # imported where used
    monkeypatch.setattr(dmpo_trl.core.rows.preparation, "prepare_row", spy)
    DMPOTrainer(
        model=tiny_model(tok),
        args=make_args(tmp_path),
        train_dataset=Dataset.from_list(dataset_rows(3)),
        processing_class=tok,
    )
    assert state["entered"] == 1 and state["rows"] == [True, True, True]
