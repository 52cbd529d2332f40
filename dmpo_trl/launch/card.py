"""DMPO run details for the model card the trainer writes (and pushes) to `output_dir/README.md`.

TRL's card names the trainer, paper and citation but neither DMPO's `gamma` / `beta`, nor the base model when the
policy was loaded from a local directory, nor local data files. `attach_card_details` makes every card the trainer
writes (at checkpoints, at `save`, in `push_to_hub`) carry a "DMPO training details" section and the matching
metadata.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Trainer
    from trl import ModelConfig

    from dmpo_trl import DMPOConfig
    from dmpo_trl.launch.script_args import DMPOScriptArguments

SECTION_START = "<!-- dmpo-training-details:start -->"
SECTION_END = "<!-- dmpo-training-details:end -->"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(name: str | None) -> bool:
    """True for `owner/name` strings that are not local paths (what the Hub accepts as base_model / datasets)."""
    return bool(name) and _HUB_ID.fullmatch(name) is not None and not os.path.exists(name)


@dataclass
class DMPOCardDetails:
    """What the card states about a DMPO run."""

    base_model: str | None
    dataset: str | None
    beta: float
    gamma: float | None
    learning_rate: float
    lr_scheduler_type: str
    warmup: str
    num_train_epochs: float
    global_batch_size: int
    max_length: int | None
    precision: str
    adapter: str | None

    def markdown(self) -> str:
        """The card section, fenced by HTML comments so that rewriting the card replaces it."""
        rows = [
            ("Method", "DMPO (Direct Multi-Turn Preference Optimization, arXiv 2406.14868)"),
            ("gamma (turn discount)", "n/a" if self.gamma is None else f"{self.gamma:g}"),
            ("beta", f"{self.beta:g}"),
            ("Base model", self.base_model or "unknown"),
            ("Dataset", self.dataset or "unknown"),
            ("Learning rate", f"{self.learning_rate:g} ({self.lr_scheduler_type}, warmup {self.warmup})"),
            ("Epochs", f"{self.num_train_epochs:g}"),
            ("Global batch size", str(self.global_batch_size)),
            ("Max length", str(self.max_length)),
            ("Precision", self.precision),
            ("Adapter", self.adapter or "none (full fine-tuning)"),
        ]
        table = "\n".join(f"| {k} | {v} |" for k, v in rows)
        return (
            f"{SECTION_START}\n## DMPO training details\n\n| Setting | Value |\n|---|---|\n{table}\n"
            f"{SECTION_END}\n"
        )


def card_details(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    *,
    world_size: int,
    dataset: str | None,
) -> DMPOCardDetails:
    """Collect the card details from the parsed recipe; `world_size` is the number of data-parallel processes."""
    steps = training_args.warmup_steps
    warmup = "none" if not steps else f"{int(steps)} steps" if steps >= 1 else f"{steps:.0%} of the steps"
    adapter = None
    if model_args.use_peft:
        adapter = f"LoRA r={model_args.lora_r}, alpha={model_args.lora_alpha}"
        if model_args.load_in_4bit:
            adapter += f", base in 4-bit {model_args.bnb_4bit_quant_type} (QLoRA)"
        elif model_args.load_in_8bit:
            adapter += ", base in 8-bit"
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    return DMPOCardDetails(
        base_model=script_args.card_base_model or model_args.model_name_or_path,
        dataset=dataset,
        beta=training_args.beta,
        gamma=getattr(training_args, "gamma", None),
        learning_rate=training_args.learning_rate,
        lr_scheduler_type=str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        warmup=warmup,
        num_train_epochs=training_args.num_train_epochs,
        global_batch_size=training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * world_size,
        max_length=training_args.max_length,
        precision=precision,
        adapter=adapter,
    )


def add_details_to_card(readme_path: str, details: DMPOCardDetails) -> None:
    """Insert (or replace) the DMPO section in an existing card and fix its metadata.

    The section goes before "## Citations" (or at the end). Metadata gains the `dmpo` tag, and `base_model` /
    `datasets` when they are Hub ids (the Hub rejects local paths there).
    """
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme_path)
    data = card.data
    tags = list(data.tags or [])
    if "dmpo" not in tags:
        tags.append("dmpo")
    data.tags = tags
    if is_hub_id(details.base_model):
        data.base_model = details.base_model
    if is_hub_id(details.dataset):
        data.datasets = [details.dataset]
    text = card.text
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start != -1 and end != -1:
        text = text[:start] + text[end + len(SECTION_END) :].lstrip("\n")
    section = details.markdown()
    anchor = text.find("## Citations")
    text = text[:anchor] + section + "\n" + text[anchor:] if anchor != -1 else text.rstrip("\n") + "\n\n" + section
    card.text = text
    card.save(readme_path)


def attach_card_details(trainer: Trainer, details: DMPOCardDetails) -> None:
    """Make every `trainer.create_model_card(...)` call also write the DMPO section.

    `Trainer.push_to_hub` and checkpoint saves regenerate README.md through `create_model_card`, so the section is
    added after each generation (world process zero only, like the card itself).
    """
    original = trainer.create_model_card

    def create_model_card(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        readme = os.path.join(trainer.args.output_dir, "README.md")
        if trainer.is_world_process_zero() and os.path.isfile(readme):
            add_details_to_card(readme, details)

    trainer.create_model_card = create_model_card  # type: ignore[method-assign]
