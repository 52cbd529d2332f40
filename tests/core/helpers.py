"""Helpers shared by the core tests."""

from dmpo_trl import DMPOConfig


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
