"""The SFT stage: TRL's `SFTTrainer` on expert trajectories, loss on the actions only.

Each expert (gold) trajectory is rendered and tokenized exactly as `DMPOTrainer` tokenizes a side of a pair
(`dmpo_trl.core.rows.tokenization.tokenize_conversation`: the same chat template, the same action spans, each ending with its
end-of-turn token). The project's action mask becomes SFTTrainer's ``assistant_masks`` column of a pre-tokenized
dataset, so `SFTTrainer` puts ``-100`` on every prompt, observation and template token and trains on the action
tokens only (this works with any chat template, including those without ``{% generation %}`` markers, which TRL's
``assistant_only_loss=True`` needs). Trajectories longer than `max_length` lose whole trailing actions
(`truncate_trajectory`), counted in the returned statistics, never cut inside an action.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dmpo_trl.core.rows.tokenization import tokenize_conversation, truncate_trajectory
from dmpo_trl.envs.base import AgentEnv
from dmpo_trl.envs.trajectory import Trajectory


__all__ = ["lora_config", "sft_dataset", "train_sft"]


def sft_dataset(
    env: AgentEnv, experts: Iterable[Trajectory], tokenizer: Any, max_length: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Pre-tokenized SFT rows ``{"input_ids", "assistant_masks"}`` of expert trajectories, and their statistics
    (``trajectories``, ``tokens``, ``action_tokens``, ``truncated``, ``actions_dropped``)."""
    rows: list[dict[str, Any]] = []
    stats = dict.fromkeys(("trajectories", "tokens", "action_tokens", "truncated", "actions_dropped"), 0)
    for i, traj in enumerate(experts):
        conv = tokenize_conversation(
            tokenizer, env.prompt_messages(traj.start), traj.messages(env), tools=env.tool_schemas(), row=i
        )
        ids, turns, kept = truncate_trajectory(conv.prompt_len, conv.input_ids, conv.turn_ids, max_length)
        if kept == 0:
            raise ValueError(f"expert trajectory {i}: not even its first action fits in max_length={max_length}")
        stats["trajectories"] += 1
        stats["truncated"] += kept < conv.num_turns
        stats["actions_dropped"] += conv.num_turns - kept
        mask = [int(t >= 0) for t in turns]
        stats["tokens"] += len(ids)
        stats["action_tokens"] += sum(mask)
        rows.append({"input_ids": ids, "assistant_masks": mask})
    return rows, stats


def lora_config(num_layers: int, r: int = 16, alpha: int = 32, last_layers: int | None = 4):
    """LoRA on every linear layer of the top `last_layers` decoder layers (all layers when ``None``): on a CPU the
    backward pass then stops at the lowest adapted layer, which makes training several times cheaper."""
    from peft import LoraConfig

    layers = None if last_layers is None else list(range(max(num_layers - last_layers, 0), num_layers))
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def checkpointing_off(config_cls) -> dict[str, bool]:
    """``{<name>: False}`` for the activation-checkpointing flag of a TrainingArguments class (renamed in
    transformers 5.x): memory is plentiful for small models, time is not."""
    names = getattr(config_cls, "__dataclass_fields__", {})
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}


def train_sft(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    output_dir: str,
    epochs: float = 2.0,
    learning_rate: float = 2e-3,
    batch_size: int = 4,
    lora: dict[str, Any] | None = None,
    seed: int = 0,
    max_length: int | None = None,
    bf16: bool = False,
    progress: bool = True,
):
    """Train `model` on the SFT rows with `trl.SFTTrainer`; returns the trainer (``trainer.model`` is the trained
    model, a PEFT model when `lora` is given: ``{"r", "alpha", "last_layers"}``)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0.1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        max_length=max_length,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        **checkpointing_off(SFTConfig),
    )
    peft_config = None
    if lora is not None:
        peft_config = lora_config(model.config.num_hidden_layers, **lora)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer
