"""Helpers shared by the core tests."""

from dmpo_trl import DMPOConfig
from dmpo_trl.core.attention import is_varlen_capable, varlen_kwargs
from dmpo_trl.core.collator import DMPOBatch


def make_args(tmp_path, **kw) -> DMPOConfig:
    """A short CPU run in float32 (TRL defaults to bf16 autocast, also on CPU; the exactness tests need float32)."""
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        max_length=512,
        gradient_checkpointing=False,
        dataloader_drop_last=False,
        bf16=False,
        disable_tqdm=True,
    )
    base.update(kw)
    return DMPOConfig(**base)


def action_log_probs(model, batch):
    """Per-token log-probs of a collated batch's action tokens (0 elsewhere, aligned with ``input_ids[:, 1:]``), by the
    public call DMPOTrainer's passes make: ``model(..., labels=..., fused_lm_head=True)`` on a model the trainer set up."""
    view = DMPOBatch(batch)
    extra = varlen_kwargs if view.packed and is_varlen_capable(model) else None
    out = model(**view.model_inputs(extra), labels=view.labels(), use_cache=False, fused_lm_head=True)
    return out.log_probs[:, -(batch["input_ids"].size(1) - 1) :]
