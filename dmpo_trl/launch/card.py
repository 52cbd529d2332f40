"""Run details for the model card the trainer writes (and pushes) to `output_dir/README.md`.

`DMPOTrainer.create_model_card` already states the method, gamma, beta, loss, max_length, learning rate, the base
model as recorded in the model config, and `dataset_name`. What only the launcher knows is added here as a
"Run configuration" section: the base model's Hub id when the run started from a local copy (`card_base_model`),
local training files (TRL's card would link them as Hub datasets), schedule, batch size over all processes,
precision, and the LoRA / QLoRA set-up. `attach_card_details` hooks this into every card the trainer writes (at
checkpoints, at save, in `push_to_hub`).
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

SECTION_START = "<!-- dmpo-run-configuration:start -->"
SECTION_END = "<!-- dmpo-run-configuration:end -->"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRL_NO_BASE = "[None](https://huggingface.co/None)"  # what TRL's template prints for a local base model


def is_hub_id(name: str | None) -> bool:
    """True for `owner/name` strings that are not local paths (what the Hub accepts as base_model / datasets)."""
    return bool(name) and _HUB_ID.fullmatch(name) is not None and not os.path.exists(name)


@dataclass
class RunCardDetails:
    """What the launcher adds to the card."""

    base_model: str
    dataset: str | None
    gamma: float
    beta: float
    schedule: str
    length: str
    global_batch_size: int
    num_processes: int
    precision: str
    adapter: str | None

    def markdown(self) -> str:
        """The card section, fenced by HTML comments so that rewriting the card replaces it."""
        rows = [
            ("Trainer", f"DMPOTrainer (gamma={self.gamma:g}, beta={self.beta:g})"),
            ("Base model", self.base_model),
            ("Training data", self.dataset or "not recorded"),
            ("Schedule", self.schedule),
            ("Length", self.length),
            ("Global batch size", f"{self.global_batch_size} ({self.num_processes} process(es))"),
            ("Precision", self.precision),
            ("Adapter", self.adapter or "none (full fine-tuning)"),
        ]
        table = "\n".join(f"| {k} | {v} |" for k, v in rows)
        return f"{SECTION_START}\n## Run configuration\n\n| setting | value |\n| --- | --- |\n{table}\n{SECTION_END}\n"


def card_details(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    *,
    num_processes: int,
    dataset: str | None,
) -> RunCardDetails:
    """Collect the card details from the parsed recipe; `num_processes` is the data-parallel world size."""
    steps = training_args.warmup_steps
    warmup = "no warmup" if not steps else f"{int(steps)} warmup steps" if steps >= 1 else f"{steps:.0%} warmup"
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    if training_args.max_steps and training_args.max_steps > 0:
        length = f"{training_args.max_steps} steps"
    else:
        length = f"{training_args.num_train_epochs:g} epoch(s)"
    adapter = None
    if model_args.use_peft:
        adapter = f"LoRA r={model_args.lora_r}, alpha={model_args.lora_alpha}"
        if model_args.load_in_4bit:
            adapter += f" on a 4-bit {model_args.bnb_4bit_quant_type} base (QLoRA); the repo holds the adapter only"
        elif model_args.load_in_8bit:
            adapter += " on an 8-bit base; the repo holds the adapter only"
        else:
            adapter += "; the repo holds the adapter only"
    return RunCardDetails(
        base_model=script_args.card_base_model or model_args.model_name_or_path,
        dataset=dataset,
        gamma=training_args.gamma,
        beta=training_args.beta,
        schedule=f"lr {training_args.learning_rate:g}, {scheduler}, {warmup}",
        length=f"{length}, max_length {training_args.max_length}",
        global_batch_size=training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * num_processes,
        num_processes=num_processes,
        precision="bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        adapter=adapter,
    )


def add_details_to_card(readme_path: str, details: RunCardDetails) -> None:
    """Insert (or replace) the run section in an existing card and fix its metadata.

    The section goes before the first "## Citations" heading (or at the end). Metadata gains the `dmpo` tag, and
    `base_model` / `datasets` when they are Hub ids (the Hub rejects local paths there).
    """
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme_path)
    data = card.data
    tags = list(data.tags or [])
    if "dmpo" not in tags:
        data.tags = [*tags, "dmpo"]
    if is_hub_id(details.base_model):
        data.base_model = details.base_model
    if is_hub_id(details.dataset):
        data.datasets = [details.dataset]
    text = card.text
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start != -1 and end != -1:
        text = text[:start] + text[end + len(SECTION_END) :].lstrip("\n")
    base = f"[{details.base_model}](https://huggingface.co/{details.base_model})"
    text = text.replace(_TRL_NO_BASE, base if is_hub_id(details.base_model) else f"`{details.base_model}`")
    anchor = text.find("## Citations")
    section = details.markdown()
    text = text[:anchor] + section + "\n" + text[anchor:] if anchor != -1 else text.rstrip("\n") + "\n\n" + section
    card.text = text
    card.save(readme_path)


def attach_card_details(trainer: Trainer, details: RunCardDetails) -> None:
    """Make every `trainer.create_model_card(...)` call also write the run section.

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
