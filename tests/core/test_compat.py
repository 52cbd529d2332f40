"""The TRL / transformers internals `dmpo_trl.core._compat` relies on, pinned: each test fails when a release changes one.

When one fails, the TRL or transformers release changed what `_compat` works around: read the function named in the
failure, and change it (or drop it, if the release now has a public hook) before widening the tested TRL range.
"""

from __future__ import annotations

import inspect
import logging

import pytest
from datasets import Dataset
from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import DefaultFlowCallback
from trl import DPOConfig, DPOTrainer

from dmpo_trl.core import _compat
from dmpo_trl.testing import make_tokenizer, save_tiny_model


@pytest.fixture(scope="module")
def dpo_trainer(tmp_path_factory):
    """A plain `DPOTrainer` of TRL, built with padding_free and precomputed reference log-probs requested."""
    tmp = tmp_path_factory.mktemp("dpo")
    tok = make_tokenizer("llama3_1")
    path = save_tiny_model(tmp / "model", tok)
    rows = [{"prompt": f"Task {i}.", "chosen": " Action: go.", "rejected": " Action: wait."} for i in range(2)]
    args = DPOConfig(
        output_dir=str(tmp / "out"),
        report_to=[],
        use_cpu=True,
        bf16=False,
        padding_free=True,
        precompute_ref_log_probs=True,
        per_device_train_batch_size=2,
    )
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("trl").addHandler(handler)
    try:
        trainer = DPOTrainer(model=path, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    finally:
        logging.getLogger("trl").removeHandler(handler)
    trainer.padding_free_warnings = [r.getMessage() for r in records if "padding_free" in r.getMessage()]
    return trainer


def test_dpotrainer_still_disables_padding_free(dpo_trainer):
    """`dpo_init_args` hides padding_free from DPOTrainer.__init__ because DPOTrainer 1.16 warns and turns it off."""
    assert dpo_trainer.padding_free is False, "DPOTrainer keeps padding_free now: revisit _compat.dpo_init_args"
    assert any("temporarily unavailable" in m for m in dpo_trainer.padding_free_warnings)


def test_dpo_init_args_restores_the_users_values():
    args = DPOConfig(
        output_dir="unused", report_to=[], use_cpu=True, padding_free=True, precompute_ref_log_probs=False
    )
    with _compat.dpo_init_args(args, precompute_ref_log_probs=True):
        assert args.padding_free is False and args.precompute_ref_log_probs is True
    assert args.padding_free is True and args.precompute_ref_log_probs is False
    with pytest.raises(RuntimeError), _compat.dpo_init_args(args, precompute_ref_log_probs=True):
        raise RuntimeError
    assert args.padding_free is True and args.precompute_ref_log_probs is False


def test_dpotrainer_keys_its_precompute_cache_on_the_model_hash(dpo_trainer):
    """`precompute_cache_key` swaps `_precompute_model_hash`, which DPOTrainer 1.16 hashes into its cache file name."""
    assert isinstance(_compat.precompute_model_hash(dpo_trainer), str)
    source = inspect.getsource(DPOTrainer._precompute_ref_logps)
    assert "self._precompute_model_hash" in source and "_get_cache_file_path" in source
    with _compat.precompute_cache_key(dpo_trainer, "context"):
        assert dpo_trainer._precompute_model_hash == "context"
    assert _compat.precompute_model_hash(dpo_trainer) not in (None, "context")


def test_dpotrainer_counts_train_tokens_over_the_tensor_parallel_size(dpo_trainer):
    """`add_train_tokens` does what DPOTrainer 1.16's loss does with `_total_train_tokens` and `_tp_size`."""
    source = inspect.getsource(DPOTrainer._compute_loss)
    assert "self._total_train_tokens += num_tokens_in_batch // self._tp_size" in source
    assert 'self._metrics[mode]["num_tokens"] = [self._total_train_tokens]' in source
    start = _compat.train_tokens(dpo_trainer)
    assert dpo_trainer._tp_size == 1
    assert _compat.add_train_tokens(dpo_trainer, 12) == start + 12 == _compat.train_tokens(dpo_trainer)


def test_dpotrainer_logs_and_clears_its_metric_lists(dpo_trainer):
    """`step_metrics` hands out DPOTrainer's `_metrics[mode]`, which its `log` averages and clears; and DPOTrainer
    still records whether the data has images (`is_vision_dataset`)."""
    source = inspect.getsource(DPOTrainer.log)
    assert "self._metrics[mode].items()" in source and "self._metrics[mode].clear()" in source
    assert _compat.step_metrics(dpo_trainer, "train") is dpo_trainer._metrics["train"]
    assert _compat.is_vision_dataset(dpo_trainer) is False


@pytest.mark.parametrize("logging_steps", [1, 2, 3])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("strategy", ["steps", "no", "epoch"])
def test_logging_schedule_is_transformers_default_flow(tmp_path, logging_steps, first, strategy):
    """`logs_this_step` logs on every step transformers' DefaultFlowCallback logs, plus the last step (the final log);
    under "epoch" on every step (the step that ends an epoch is not known in advance)."""
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        logging_strategy=strategy,
        logging_steps=logging_steps,
        logging_first_step=first,
    )
    max_steps = 7
    for step in range(1, max_steps + 1):
        control = TrainerControl()
        DefaultFlowCallback().on_step_end(
            args, TrainerState(global_step=step, max_steps=max_steps, logging_steps=logging_steps), control
        )
        ours = _compat.logs_this_step(
            args, TrainerState(global_step=step - 1, max_steps=max_steps, logging_steps=logging_steps)
        )
        if strategy == "epoch":
            assert ours
        elif step == max_steps:
            assert ours
        else:
            assert ours == control.should_log, f"step {step}"
