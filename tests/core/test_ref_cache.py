"""Reference scores once: the keyed store (reuse across runs, subsets, duplicates; recomputed when the context
changes) and what `precompute_ref_log_probs=None` resolves to."""

import copy
import json
import logging
import math

import pytest
import torch
from datasets import Dataset, IterableDataset

from dmpo_trl import DMPOTrainer
from dmpo_trl.core.ref_cache import ReferenceScoreStore, resolve_precompute, row_key
from dmpo_trl.testing import dataset_rows, tiny_model
from tests.core.helpers import make_args


def distinct_rows(n, seed=0):
    rows = dataset_rows(n, seed=seed)
    for i, row in enumerate(rows):
        row["prompt"][-1]["content"] += f" (pair {seed}-{i})"
    return rows


@pytest.fixture
def computed(monkeypatch):
    """Number of pairs the reference actually scored, per precompute call."""
    calls = []
    original = DMPOTrainer.compute_ref_log_probs

    def spy(self, model, inputs):
        calls.append(int(inputs["num_turns"].numel() // 2))
        return original(self, model, inputs)

    monkeypatch.setattr(DMPOTrainer, "compute_ref_log_probs", spy)
    return calls


def trainer_on(tmp_path, tok, rows, ref, store, **kw):
    return DMPOTrainer(
        model=tiny_model(tok),
        ref_model=copy.deepcopy(ref),
        args=make_args(tmp_path, precompute_ref_log_probs=True, ref_cache_dir=str(store), **kw),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )


def test_store_reuses_scores_across_runs_subsets_and_orders(tmp_path, tok, computed):
    rows, ref, store = distinct_rows(8, seed=2), tiny_model(tok, seed=6), tmp_path / "store"
    first = trainer_on(tmp_path, tok, rows, ref, store)
    assert sum(computed) == 8
    online = DMPOTrainer(
        model=tiny_model(tok),
        ref_model=copy.deepcopy(ref),
        args=make_args(tmp_path, precompute_ref_log_probs=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    batch = online.data_collator([online.train_dataset[i] for i in range(8)])
    ref_w, ref_l = online.compute_ref_log_probs(online.ref_model, batch)
    assert torch.allclose(torch.tensor(first.train_dataset["ref_chosen_logps"]), ref_w, atol=1e-5)
    assert torch.allclose(torch.tensor(first.train_dataset["ref_rejected_logps"]), ref_l, atol=1e-5)

    computed.clear()
    again = trainer_on(tmp_path, tok, rows[::-1][:5], ref, store)  # a later run on a re-ordered subset
    assert computed == []
    by_key = {row_key(ex): (ex["ref_chosen_logps"], ex["ref_rejected_logps"]) for ex in first.train_dataset}
    for ex in again.train_dataset:
        assert (ex["ref_chosen_logps"], ex["ref_rejected_logps"]) == by_key[row_key(ex)]  # the stored float32 values

    computed.clear()
    trainer_on(tmp_path, tok, rows + distinct_rows(3, seed=9) + rows[:2], ref, store)  # 3 new pairs, 2 duplicates
    assert sum(computed) == 3


CHANGES = ["gamma", "turn_weighting", "max_length", "ld_alpha", "reference", "precision"]
#: Same weights (TRL's hash is equal), another computation: a config field, the attention, the chat template.
SAME_WEIGHTS = ["config", "attention", "chat_template"]


@pytest.mark.parametrize("change", CHANGES + SAME_WEIGHTS)
def test_store_recomputes_when_the_context_changes(tmp_path, tok, computed, change):
    rows, ref, store = distinct_rows(4, seed=1), tiny_model(tok, seed=6), tmp_path / "store"
    trainer_on(tmp_path, tok, rows, ref, store)
    computed.clear()
    if change in SAME_WEIGHTS:
        other_tok = copy.deepcopy(tok)
        if change == "chat_template":  # renders the same tokens: only the store key can tell
            other_tok.chat_template = tok.chat_template + "{#- another revision -#}"
        overrides = {"config": {"rms_norm_eps": 1e-2}, "attention": {"attn_implementation": "eager"}}
        other = tiny_model(tok, seed=6, **overrides.get(change, {}))
        assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), other.parameters(), strict=True))
        trainer_on(tmp_path, other_tok, rows, other, store)
        assert sum(computed) == 4
        assert len(list(store.glob("*.sqlite"))) == 2
        return
    kw = {
        "gamma": dict(gamma=0.3),
        "turn_weighting": dict(turn_weighting="uniform"),
        "max_length": dict(max_length=100),
        "ld_alpha": dict(ld_alpha=0.5),  # LD-DPO scales the reference's tokens too
        "precision": dict(bf16=True),
    }.get(change, {})
    other_ref = tiny_model(tok, seed=7) if change == "reference" else ref
    trainer_on(tmp_path, tok, rows, other_ref, store, **kw)
    assert sum(computed) == 4
    assert len(list(store.glob("*.sqlite"))) == 2


def test_empty_cache_dir_keeps_scores_in_memory(tmp_path, tok, computed):
    rows, ref = distinct_rows(4), tiny_model(tok, seed=6)
    trainer_on(tmp_path, tok, rows, ref, "")
    trainer_on(tmp_path, tok, rows, ref, "")
    assert sum(computed) == 8 and not (tmp_path / "store").exists()


def test_store_says_what_it_was_computed_with(tmp_path, tok, computed):
    trainer_on(tmp_path, tok, distinct_rows(2), tiny_model(tok, seed=6, rms_norm_eps=1e-3), tmp_path / "store")
    (meta,) = (tmp_path / "store").glob("*.json")
    described = json.loads(meta.read_text())
    assert meta.with_suffix(".sqlite").is_file()
    assert described["model"]["config"]["rms_norm_eps"] == 1e-3
    assert described["tokenizer"]["chat_template"] == tok.chat_template
    assert set(described["versions"]) == {"transformers", "torch"}


def test_corrupted_store_is_named_with_the_remedy(tmp_path):
    store = ReferenceScoreStore(tmp_path, "ctx")
    store.path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OSError, match=r"ctx\.sqlite: the reference-score store cannot be read .*delete that file"):
        store.get(["a"])
    with pytest.raises(OSError, match="delete that file"):
        store.put([("a", 0.0, 0.0)])


def test_store_round_trip(tmp_path):
    store = ReferenceScoreStore(tmp_path, "ctx")
    assert store.get(["a"]) == {}
    store.put([("a", -1.25, -2.5), ("b", float("-inf"), 0.0)])
    store.put([("a", -3.0, -4.0)])
    assert store.get(["a", "b", "c"]) == {"a": (-3.0, -4.0), "b": (float("-inf"), 0.0)}


def test_default_precomputes_where_exact_and_logs_the_store(tmp_path, tok, computed, caplog):
    rows = distinct_rows(8, seed=3)
    with caplog.at_level(logging.INFO, logger="dmpo_trl.core.trainer"):
        trainer = DMPOTrainer(
            model=tiny_model(tok),
            args=make_args(tmp_path, max_steps=-1, num_train_epochs=2),  # precompute_ref_log_probs=None
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
    assert trainer.precompute_ref_logps and trainer.ref_model is None and sum(computed) == 8
    assert trainer.args.precompute_ref_log_probs is None  # the user's setting is left as given
    assert "Reference scores of the train dataset: 8 distinct pairs scored by the reference, 0/8 reused" in caplog.text
    assert 'ref_cache_dir="" turns it off' in caplog.text  # where the store lives, and how to do without it
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(2), abs=1e-6)
    computed.clear()
    trainer.train()
    assert computed == []  # two epochs, no reference forward


def test_resolve_precompute(tmp_path):
    data = Dataset.from_list(dataset_rows(8))
    stream = IterableDataset.from_generator(lambda: iter(dataset_rows(8)))

    def resolve(train=data, evals=None, **kw):
        return resolve_precompute(make_args(tmp_path, per_device_train_batch_size=4, **kw), train, evals)

    assert resolve(max_steps=2)  # 2 steps x 4 pairs: the whole dataset once
    assert not resolve(max_steps=1)  # half an epoch: precomputing would score pairs never trained on
    assert resolve(max_steps=1, gradient_accumulation_steps=2)
    assert resolve(max_steps=-1)
    assert not resolve(stream)
    assert not resolve(evals={"a": data, "b": stream})
    assert not resolve(sync_ref_model=True, max_steps=2)
    assert not resolve(f_divergence_type="js_divergence", max_steps=2)  # needs the reference of every action
    # float64 compute: precomputed scores travel as float32 (as in TRL's collator), online ones do not
    assert not resolve(max_steps=2, model_init_kwargs={"dtype": torch.float64})
    assert not resolve_precompute(make_args(tmp_path), data, None, torch.nn.Linear(2, 2).double())
    assert resolve_precompute(make_args(tmp_path), data, None, torch.nn.Linear(2, 2))
    assert resolve(max_steps=2, model_init_kwargs={"dtype": "bfloat16"})
    assert resolve(ld_alpha=0.5, use_weighting=True, max_steps=2)  # exact: LD-DPO's factors apply when precomputing
    assert resolve(precompute_ref_log_probs=True, max_steps=1)
    assert not resolve(precompute_ref_log_probs=False, max_steps=2)
