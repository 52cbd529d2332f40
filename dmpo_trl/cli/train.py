"""The training entry point: `python -m dmpo_trl.cli.train`, `accelerate launch -m dmpo_trl.cli.train` and
`dmpo-trl train` all run `main` of this module.

    python -m dmpo_trl.cli.train --config recipes/smollm2-135m-instruct/dmpo/cpu.yaml [--flag value ...]
    accelerate launch --config_file dmpo_trl/cli/accelerate_configs/zero3.yaml --num_processes 8 \
        -m dmpo_trl.cli.train --config recipes/qwen2.5-7b-instruct/dmpo/full.yaml
    dmpo-trl train --config recipe.yaml [--flag value ...]                    # one process
    dmpo-trl train --accelerate-config zero3 --num-processes 8 --config recipe.yaml [--flag value ...]

Arguments follow TRL's `TrlParser` conventions: a flat YAML recipe (`--config`) sets the defaults of three
dataclasses -- `DMPOScriptArguments` (data and `trl dpo`'s dataset mixtures, card), `DMPOConfig` (training) and
`ModelConfig` (model, LoRA, quantization) -- and command-line flags override the recipe. Unknown recipe keys are an error. `dmpo-trl train`
passes everything it does not know itself to that parser; with `--accelerate-config` (a shipped name: ddp, zero2,
zero3, fsdp, or a path) it re-runs this module on every process with `accelerate launch`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dmpo_trl.cli.launch import TRAIN_MODULE


if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback
    from trl import ModelConfig, TrlParser

    from dmpo_trl import DMPOConfig
    from dmpo_trl.cli.script_args import DMPOScriptArguments


_RESUME_LAST = {"true", "last", "latest"}


def make_parser() -> TrlParser:
    """The `TrlParser` over (DMPOScriptArguments, DMPOConfig, ModelConfig)."""
    from trl import ModelConfig, TrlParser

    from dmpo_trl import DMPOConfig
    from dmpo_trl.cli.script_args import DMPOScriptArguments

    return TrlParser((DMPOScriptArguments, DMPOConfig, ModelConfig))


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
    """Load data and tokenizer, and build the `DMPOTrainer` the recipe describes (with its card details)."""
    from trl import get_peft_config, get_quantization_config

    from dmpo_trl import DMPOTrainer
    from dmpo_trl.cli.modeling import build_model_init_kwargs, load_tokenizer
    from dmpo_trl.cli.recipe_data import describe_data_source, load_preference_datasets

    training_args.model_init_kwargs = build_model_init_kwargs(model_args, training_args)
    want_eval = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    train_ds, eval_ds = load_preference_datasets(script_args, want_eval=want_eval, seed=training_args.seed)
    tokenizer = load_tokenizer(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        chat_template_path=script_args.chat_template_path,
        require_chat_template=True,
    )
    trainer = DMPOTrainer(
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
    # What only the recipe knows, for every card the trainer writes (checkpoints, save, push)
    trainer.card_base_model = script_args.card_base_model or model_args.model_name_or_path
    trainer.card_dataset = describe_data_source(script_args)
    return trainer


def run(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """Train, save the final model (adapter only for LoRA runs) with its card, and push it if the recipe asks."""
    trainer = build_trainer(script_args, training_args, model_args, callbacks)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    card_kwargs: dict[str, Any] = {"dataset_name": script_args.dataset_name}
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


# ------------------------------------------------------------------ `dmpo-trl train`
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train with DMPO from a recipe (flags override the recipe; see recipes/README.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        add_help=False,
    )
    parser.add_argument(
        "-h",
        "--help",
        action=_FullHelp,
        help="show this help, then every recipe field (as `trl dpo --help`), and exit",
    )
    group = parser.add_argument_group("launching (all other arguments go to the recipe parser)")
    group.add_argument(
        "--accelerate-config",
        "--accelerate_config",
        dest="accelerate_config",
        metavar="NAME|PATH",
        help="run under `accelerate launch` with this config: ddp, zero2, zero3, fsdp, or a YAML path",
    )
    group.add_argument(
        "--num-processes",
        "--num_processes",
        dest="num_processes",
        type=int,
        help="total processes over all machines (default: visible GPUs, or 1)",
    )
    group.add_argument("--num-machines", "--num_machines", dest="num_machines", type=int, default=1)
    group.add_argument("--machine-rank", "--machine_rank", dest="machine_rank", type=int, default=0)
    group.add_argument("--main-process-ip", "--main_process_ip", dest="main_process_ip")
    group.add_argument("--main-process-port", "--main_process_port", dest="main_process_port", type=int)
    group.add_argument(
        "--mixed-precision",
        "--mixed_precision",
        dest="mixed_precision",
        choices=["no", "fp16", "bf16"],
        help="override the accelerate config's mixed_precision (the shipped ones say 'no'; the recipe's bf16 rules)",
    )
    group.add_argument(
        "--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print the command and exit"
    )
    parser.set_defaults(func=run_command, accepts_extra_args=True)


class _FullHelp(argparse.Action):
    """``--help``: the launcher's options, then the recipe parser's: every field of the script arguments (data,
    mixture, card), `DMPOConfig` (all of `DPOConfig` and `TrainingArguments`, plus DMPO's) and `ModelConfig`."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        print("\nrecipe fields (in the recipe file, or as flags that override it):\n")
        recipe = make_parser()
        recipe.prog = "dmpo-trl train [launch options]"
        recipe.print_help()
        parser.exit()


def run_command(args: argparse.Namespace, rest: list[str]) -> int:
    """`dmpo-trl train`: run the recipe in-process, or build and run the `accelerate launch` command."""
    launch_flags = (args.num_processes, args.main_process_ip, args.main_process_port, args.mixed_precision)
    if args.accelerate_config is None and (any(v is not None for v in launch_flags) or args.num_machines != 1):
        raise SystemExit("dmpo-trl train: process/machine flags need --accelerate-config (e.g. ddp, zero3).")
    if args.accelerate_config is None:
        if args.dry_run:
            print(shlex.join(["python", "-m", TRAIN_MODULE, *rest]))
            return 0
        return main(rest)

    import subprocess

    from dmpo_trl.cli.launch import (
        LaunchTopology,
        build_accelerate_command,
        default_num_processes,
        resolve_accelerate_config,
    )

    try:
        config_file = resolve_accelerate_config(args.accelerate_config)
        topology = LaunchTopology(
            num_processes=args.num_processes or default_num_processes() * args.num_machines,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            main_process_ip=args.main_process_ip,
            main_process_port=args.main_process_port,
            mixed_precision=args.mixed_precision,
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"dmpo-trl train: {err}") from err
    cmd = build_accelerate_command(config_file, topology, rest)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
