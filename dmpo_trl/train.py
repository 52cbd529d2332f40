"""DMPO training entry point, one process of a (possibly distributed) run.

    python -m dmpo_trl.train --config recipes/smollm2-135m-instruct/dmpo/cpu.yaml [--flag value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 8 \
        -m dmpo_trl.train --config recipes/qwen2.5-7b-instruct/dmpo/full.yaml

Arguments follow TRL's `TrlParser` conventions: a flat YAML recipe (`--config`) sets the defaults of three
dataclasses -- `DMPOScriptArguments` (data, card), `DMPOConfig` (training) and `ModelConfig` (model, LoRA,
quantization) -- and command-line flags override the recipe. Unknown recipe keys are an error.
`dmpo-trl train` wraps this module and can start it under `accelerate launch` for you.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dmpo_trl.launch.script_args import DMPOScriptArguments

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback
    from trl import ModelConfig, TrlParser

    from dmpo_trl import DMPOConfig


_RESUME_LAST = {"true", "last", "latest"}


def _config_classes() -> tuple[type, type]:
    """(DMPOConfig, DMPOTrainer)."""
    from dmpo_trl import DMPOConfig, DMPOTrainer

    return DMPOConfig, DMPOTrainer


def make_parser() -> TrlParser:
    """The `TrlParser` over (DMPOScriptArguments, DMPOConfig, ModelConfig)."""
    from trl import ModelConfig, TrlParser

    config_cls, _ = _config_classes()
    return TrlParser((DMPOScriptArguments, config_cls, ModelConfig))


def parse_args(argv: Sequence[str] | None = None) -> tuple[DMPOScriptArguments, DMPOConfig, ModelConfig]:
    """Parse `--config recipe.yaml` plus overriding flags; unknown keys in the recipe or on the line are errors.

    Raises:
        ValueError: unknown recipe keys, or no `model_name_or_path`.
    """
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        args=list(sys.argv[1:] if argv is None else argv)
    )
    if not model_args.model_name_or_path:
        raise ValueError("`model_name_or_path` is required (in the recipe or as --model_name_or_path).")
    return script_args, training_args, model_args


def resolve_resume(value: str | bool | None, output_dir: str) -> str | bool | None:
    """Map `resume_from_checkpoint` to what `Trainer.train` takes.

    - None / "" / "false": start fresh;
    - "true" / "last": the last checkpoint in `output_dir` (error if there is none);
    - "auto": the last checkpoint in `output_dir` if there is one, else start fresh (for requeued cluster jobs);
    - anything else: a checkpoint directory.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if value is None or value is False:
        return None
    text = str(value).strip()
    lowered = text.lower()
    if lowered in {"", "false", "none"}:
        return None
    if lowered in _RESUME_LAST or value is True:
        return True
    if lowered == "auto":
        return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if not os.path.isdir(text):
        raise FileNotFoundError(f"resume_from_checkpoint={text!r} is not a checkpoint directory.")
    return text


def build_trainer(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """Load data and tokenizer, and build the `DMPOTrainer` the recipe describes (with the DMPO card section)."""
    from trl import get_peft_config, get_quantization_config

    from dmpo_trl.launch.card import attach_card_details, card_details
    from dmpo_trl.launch.data import describe_data_source, load_preference_datasets
    from dmpo_trl.launch.modeling import build_model_init_kwargs, load_tokenizer

    _, trainer_cls = _config_classes()
    training_args.model_init_kwargs = build_model_init_kwargs(model_args, training_args)
    want_eval = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    train_ds, eval_ds = load_preference_datasets(script_args, want_eval=want_eval, seed=training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args)
    trainer = trainer_cls(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    if script_args.ignore_bias_buffers:
        import torch

        trainer.model._ddp_params_and_buffers_to_ignore = [  # torch DDP hack, as in TRL's dpo script
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
    details = card_details(
        script_args,
        training_args,
        model_args,
        num_processes=trainer.accelerator.num_processes,
        dataset=describe_data_source(script_args),
    )
    attach_card_details(trainer, details)
    return trainer


def run(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """Train, save the final model (adapter only for LoRA runs) with its card, and push it if the recipe asks."""
    from dmpo_trl.launch.card import is_hub_id

    trainer = build_trainer(script_args, training_args, model_args, callbacks)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    # TRL's card links `dataset_name` to huggingface.co/datasets/..., so only Hub ids go there.
    dataset_name = script_args.dataset_name if is_hub_id(script_args.dataset_name) else None
    card_kwargs: dict[str, Any] = {"dataset_name": dataset_name}
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()  # trainer_state.json (log history) next to the final model
    if training_args.push_to_hub:
        # Saves the model (adapter only for PEFT) to output_dir, writes the card, uploads the folder. (`save_model`
        # would push a second time when push_to_hub is set, so it is not called here.)
        trainer.push_to_hub(**card_kwargs)
        trainer.accelerator.print(f"Model pushed to https://huggingface.co/{trainer.hub_model_id}.")
    else:
        trainer.save_model(training_args.output_dir)
        trainer.create_model_card(model_name=_model_name(training_args), **card_kwargs)
        trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    return trainer


def _model_name(training_args: DMPOConfig) -> str:
    if training_args.hub_model_id:
        return training_args.hub_model_id.split("/")[-1]
    return os.path.basename(os.path.normpath(training_args.output_dir))


def main(argv: Sequence[str] | None = None, callbacks: list[TrainerCallback] | None = None) -> int:
    """Parse, train, save; returns the exit code. `callbacks` is for programmatic use (tests, wrappers)."""
    script_args, training_args, model_args = parse_args(argv)
    trainer = run(script_args, training_args, model_args, callbacks)
    # Every rank must be done with saving / the card / the push before any rank tears the process group down.
    trainer.accelerator.wait_for_everyone()
    end = getattr(trainer, "end", None)
    if callable(end):  # transformers >= 5.18: finish trackers, destroy the process group
        end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
