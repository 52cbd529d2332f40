"""The model card section every `DMPOTrainer` card carries, and the Hub-metadata rules it follows.

`DMPOTrainer.create_model_card` writes TRL's card, then `write_card_section` adds one "Run configuration" table
(`card_rows`: gamma, beta, loss, schedule, global batch, precision, adapter) fenced by HTML comments, so that every
regeneration (checkpoints, `save_model`, `push_to_hub`) replaces it instead of appending a copy. A card names models,
folders and data by their Hub id or, for local ones, by the folder's or file's name only (`card_name`): never an
absolute local path, which means nothing to a reader of the card and tells them about the machine that trained it.
"""

from __future__ import annotations

import json
import os
import re

from accelerate.utils import is_peft_model
from huggingface_hub import ModelCard


__all__ = ["adapter_description", "card_name", "card_rows", "is_hub_id", "write_card_section"]

CARD_START = "<!-- dmpo-run-configuration:start -->"
CARD_END = "<!-- dmpo-run-configuration:end -->"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRL_NO_BASE = "[None](https://huggingface.co/None)"  # what TRL's template prints for a local base model
_TRL_NO_REPO = 'model="None"'  # TRL's quick start for a model that is not pushed (no hub_model_id)


def is_hub_id(name: str | None) -> bool:
    """True for `owner/name` strings that are not local paths (what the Hub accepts as base_model / datasets)."""
    return bool(name) and _HUB_ID.fullmatch(name) is not None and not os.path.exists(name)


def card_name(name: str | None) -> str | None:
    """A Hub id as it is; a local path as its last component (`/data/models/base/` -> `base`); a comma-separated
    list of either (several data files) item by item."""
    if not name:
        return name
    parts = [part.strip() for part in name.split(",")]
    named = [part if is_hub_id(part) else os.path.basename(os.path.normpath(part)) or part for part in parts]
    return ", ".join(named)


def write_card_section(
    readme_path: str, rows: list[tuple[str, str]], base_model: str | None, dataset: str | None
) -> None:
    """Insert (or replace) the "Run configuration" table in a card written by TRL, and fix its metadata.

    The section goes before the first "## Citations" heading (or at the end), fenced by HTML comments so that
    rewriting the card replaces it. Metadata gains the `dmpo` tag, and `base_model` / `datasets` when they are Hub
    ids (the Hub rejects local paths there); TRL's "[None](...)" link for a local base model names the model's folder,
    and the quick start's `model="None"` of a model that is not pushed names the folder the card is in (by name).
    """
    card = ModelCard.load(readme_path)
    data = card.data
    tags = list(data.tags or [])
    if "dmpo" not in tags:
        data.tags = [*tags, "dmpo"]
    if is_hub_id(base_model):
        data.base_model = base_model
    if is_hub_id(dataset):
        data.datasets = [dataset]
    text = card.text
    start, end = text.find(CARD_START), text.find(CARD_END)
    if start != -1 and end != -1:
        text = text[:start] + text[end + len(CARD_END) :].lstrip("\n")
    if base_model:
        name = card_name(base_model)
        link = f"[{name}](https://huggingface.co/{name})" if is_hub_id(base_model) else f"`{name}`"
        text = text.replace(_TRL_NO_BASE, link)
    folder = os.path.basename(os.path.dirname(os.path.abspath(readme_path)))
    text = text.replace(_TRL_NO_REPO, f"model={json.dumps(folder)}")
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    section = f"{CARD_START}\n## Run configuration\n\n| setting | value |\n| --- | --- |\n{table}\n{CARD_END}\n"
    anchor = text.find("## Citations")
    text = text[:anchor] + section + "\n" + text[anchor:] if anchor != -1 else text.rstrip("\n") + "\n\n" + section
    card.text = text
    card.save(readme_path)


def card_rows(trainer, base_model: str, dataset: str | None) -> list[tuple[str, str]]:
    """The rows of the "Run configuration" table: DMPO settings, schedule, batch over all processes, adapter."""
    args = trainer.args
    warmup = args.warmup_steps
    warmup = "no warmup" if not warmup else f"{int(warmup)} warmup steps" if warmup >= 1 else f"{warmup:.0%} warmup"
    scheduler = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    length = f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs:g} epoch(s)"
    processes = trainer.accelerator.num_processes
    trainer_row = f"DMPOTrainer (gamma={args.gamma:g}, beta={args.beta:g})"
    method = "DMPO (Direct Multi-Turn Preference Optimization, arXiv 2406.14868)"
    if getattr(args, "turn_weighting", "dmpo") == "uniform":
        trainer_row = f"DMPOTrainer (turn_weighting=uniform, beta={args.beta:g})"
        method = "multi-turn DPO (every action weight 1, the DMPO paper's baseline)"
    elif getattr(args, "turn_weighting", "dmpo") == "dmpo_eq16":
        trainer_row = f"DMPOTrainer (turn_weighting=dmpo_eq16, gamma={args.gamma:g}, beta={args.beta:g})"
        method = "DMPO with the paper's printed Eq. 16 weights (1 - gamma^(T-t)) / (1 - gamma^T)"
    return [
        ("Trainer", trainer_row),
        ("Method", method),
        ("Base model", card_name(base_model)),
        ("Training data", card_name(dataset) or "not recorded"),
        ("gamma", f"{args.gamma}"),
        ("beta", f"{args.beta}"),
        ("loss_type", ", ".join(args.loss_type)),
        ("Schedule", f"lr {args.learning_rate:g}, {scheduler}, {warmup}"),
        ("Length", f"{length}, max_length {args.max_length}"),
        (
            "Global batch size",
            f"{args.per_device_train_batch_size * args.gradient_accumulation_steps * processes} "
            f"({processes} process(es))",
        ),
        ("Precision", "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"),
        ("Adapter", adapter_description(trainer.model)),
    ]


def adapter_description(model) -> str:
    """What the saved repository holds: the full model, or a LoRA adapter (on a quantized base for QLoRA)."""
    if not is_peft_model(model):
        return "none (full fine-tuning)"
    config = model.peft_config[model.active_adapter]
    text = f"LoRA r={config.r}, alpha={config.lora_alpha}" if hasattr(config, "r") else str(config.peft_type)
    base = model.get_base_model()
    if getattr(base, "is_loaded_in_4bit", False):
        quant = getattr(base.config, "quantization_config", None)
        quant_type = getattr(quant, "bnb_4bit_quant_type", None) or (quant or {}).get("bnb_4bit_quant_type", "")
        text += f" on a 4-bit {quant_type} base (QLoRA)"
    elif getattr(base, "is_loaded_in_8bit", False):
        text += " on an 8-bit base"
    return text + "; the repo holds the adapter only"
