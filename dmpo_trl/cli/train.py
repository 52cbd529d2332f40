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
import contextlib
import difflib
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dmpo_trl.cli.launch import (
    TRAIN_MODULE,
    LaunchTopology,
    build_accelerate_command,
    default_num_processes,
    resolve_accelerate_config,
)
from dmpo_trl.cli.train_help import recipe_help
from dmpo_trl.core.checkpoints import last_complete_checkpoint
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.files import OutputLock
from dmpo_trl.core.trackers import check_report_to
from dmpo_trl.models import (
    DEFAULT_MODEL_HUB_ID,
    build_model_init_kwargs,
    check_model_source,
    is_default_alias,
    load_tokenizer,
    resolve_model,
)


if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback
    from trl import ModelConfig, TrlParser

    from dmpo_trl import DMPOConfig
    from dmpo_trl.cli.script_args import DMPOScriptArguments


_RESUME_LAST = {"true", "last", "latest"}


def make_parser() -> TrlParser:
    """The `TrlParser` over (DMPOScriptArguments, DMPOConfig, ModelConfig) (`dmpo_trl.cli.script_args.make_parser`)."""
    # lazy: loads TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl.cli.script_args import make_parser

    return make_parser()


def parse_args(argv: Sequence[str] | None = None) -> tuple[DMPOScriptArguments, DMPOConfig, ModelConfig]:
    """Parse `--config recipe.yaml` plus overriding flags; unknown keys in the recipe or on the line are errors.

    The recipe's keys and the flags are checked against the three dataclasses before any of them is built, so a typo
    is reported as such (naming the recipe file and the closest known key), not as whatever the defaults then trip.

    Raises:
        FileNotFoundError: the recipe does not exist.
        ValueError: unknown recipe keys or flags, or no `model_name_or_path`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    _check_keys(parser, argv)
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    if not model_args.model_name_or_path:
        raise ValueError("`model_name_or_path` is required (in the recipe or as --model_name_or_path).")
    return script_args, training_args, model_args


def _check_keys(parser: TrlParser, argv: list[str]) -> None:

    # lazy: loads pyarrow; keeps `dmpo-trl --help` fast
    from dmpo_trl.cli.recipe_file import check_recipe, read_recipe

    known = {action.dest for action in parser._actions} - {"help"}  # argparse's list of the options it defines
    rest = list(argv)
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            raise ValueError("--config needs a recipe file")
        config = rest[i + 1]
        del rest[i : i + 2]
        check_recipe(parser, read_recipe(config), config)
    _, extra = parser.parse_known_args(rest)
    flags = [token for token in extra if token.startswith("--")]
    if flags:
        hints = [flag + _closest(flag[2:].split("=")[0], known, difflib) for flag in flags]
        raise ValueError(f"unknown flag(s) {', '.join(hints)}")


def _closest(key: str, known: set[str], difflib) -> str:
    match = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def resolve_resume(value: str | bool | None, output_dir: str) -> str | bool | None:
    """Map `resume_from_checkpoint` to what `Trainer.train` takes.

    - None / "" / "false": start fresh;
    - "true" / "last": the last complete checkpoint in `output_dir` (error if there is none);
    - "auto": the last complete checkpoint in `output_dir` if there is one, else start fresh (for requeued cluster
      jobs). A checkpoint without ``trainer_state.json`` (a save cut by a crash or a full disk) is skipped with a
      warning (`dmpo_trl.core.checkpoints.last_complete_checkpoint`);
    - anything else: a checkpoint directory.
    """

    if value is None or value is False:
        return None
    text = str(value).strip()
    lowered = text.lower()
    if lowered in {"", "false", "none"}:
        return None
    if lowered in _RESUME_LAST or value is True:
        return True
    if lowered == "auto":
        return last_complete_checkpoint(output_dir)
    if not os.path.isdir(text):
        raise FileNotFoundError(f"resume_from_checkpoint={text!r} is not a checkpoint directory.")
    return text


def build_trainer(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """Load and check the data, load the tokenizer, tokenize every row, then build the `DMPOTrainer` the recipe
    describes (with its card details). Everything that can fail on the data fails before the model loads."""
    from trl import get_peft_config, get_quantization_config

    # lazy: loads torch and TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl import DMPOTrainer

    # lazy: loads pyarrow; keeps `dmpo-trl --help` fast
    from dmpo_trl.cli.recipe_data import describe_data_source, load_recipe_data

    # lazy: loads torch and datasets; keeps `dmpo-trl --help` fast
    from dmpo_trl.core.rows.preparation import prepare_dataset

    check_report_to(training_args.report_to)  # a missing tracker fails before the data is read
    training_args.model_init_kwargs = build_model_init_kwargs(model_args, training_args)
    want_eval = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    check_output_dir(training_args.output_dir)
    train, eval_data = load_recipe_data(
        script_args, want_eval=want_eval, seed=training_args.seed, skip_invalid=training_args.skip_invalid_pairs
    )
    name = model_args.model_name_or_path
    model_path = resolve_model(name)  # "default": the embedded SmolLM2-135M-Instruct, converted once and cached
    check_model_source(model_path)
    tokenizer = load_tokenizer(
        model_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        chat_template_path=script_args.chat_template_path,
        require_chat_template=True,
    )
    prepared, stats = {}, {}
    for split, data in (("train", train), ("eval", eval_data)):
        if data is None:
            continue
        try:
            prepared[split], stats[split] = prepare_dataset(
                data.dataset, tokenizer, training_args, split, row_label=data.row_label
            )
        except DMPODataError as err:
            raise data.locate(err) from None
    trainer = DMPOTrainer(
        model=model_path,
        args=training_args,
        train_dataset=prepared["train"],
        eval_dataset=prepared.get("eval"),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    trainer.dmpo_data_stats.update({split: value for split, value in stats.items() if value is not None})
    trainer.dmpo_train_data = train  # where each training row comes from, to name it in errors raised while training
    if script_args.ignore_bias_buffers:
        import torch

        trainer.model._ddp_params_and_buffers_to_ignore = [  # torch DDP hack, as in TRL's dpo script
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
    # What only the recipe knows, for every card the trainer writes (checkpoints, save, push)
    trainer.card_base_model = script_args.card_base_model or (DEFAULT_MODEL_HUB_ID if is_default_alias(name) else name)
    trainer.card_dataset = describe_data_source(script_args)
    return trainer


def check_output_dir(output_dir: str) -> None:
    """Create `output_dir` and write a file there now, so an unwritable one fails before training, not after it."""
    probe = os.path.join(output_dir, f".dmpo-write-check-{os.getpid()}")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with open(probe, "w") as handle:
            handle.write("")
        os.remove(probe)
    except OSError as err:
        raise OSError(
            f"output_dir {output_dir!r} is not writable ({err.strerror or err}): choose another --output_dir"
        ) from err


def run(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """Train, save the final model (adapter only for LoRA runs) with its card, and push it if the recipe asks.

    The main process holds a lock on `output_dir` meanwhile (`dmpo_trl.core.files.OutputLock`): a second training on
    the same folder fails at once, naming this one's process and host."""

    if int(os.environ.get("RANK", "0")) != 0:
        return _run(script_args, training_args, model_args, callbacks)
    check_output_dir(training_args.output_dir)
    with OutputLock(training_args.output_dir, "training"), _hub_errors(training_args.push_to_hub):
        return _run(script_args, training_args, model_args, callbacks)


#: Where the errors of a Hub request come from (the Hub client and the HTTP stacks under it).
_NETWORK_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3")


@contextlib.contextmanager
def _hub_errors(push_to_hub: bool):
    """With `push_to_hub`: a failed Hub request (creating the repo, uploading) is said to be the Hub's, with the two
    ways to train without it."""
    try:
        yield
    except Exception as err:
        network = isinstance(err, (ConnectionError, TimeoutError)) or type(err).__module__.startswith(_NETWORK_MODULES)
        if not push_to_hub or not network:
            raise
        text = " ".join(str(err).split())[:200]
        raise OSError(
            "the Hugging Face Hub could not be reached or refused the request (push_to_hub is set: "
            f"{type(err).__name__}: {text}); check the network and your token (HF_TOKEN or `hf auth login`), "
            "or train without the Hub: "
            "push_to_hub=False (needed offline, with HF_HUB_OFFLINE=1)"
        ) from err


def _run(
    script_args: DMPOScriptArguments,
    training_args: DMPOConfig,
    model_args: ModelConfig,
    callbacks: list[TrainerCallback] | None,
) -> Trainer:
    trainer = build_trainer(script_args, training_args, model_args, callbacks)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    card_kwargs: dict[str, Any] = {"dataset_name": script_args.dataset_name}

    try:
        trainer.train(resume_from_checkpoint=resume)
    except DMPODataError as err:  # a streamed row, read while training: name its file and row
        raise trainer.dmpo_train_data.locate(err) from None
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
    """``--help``: the launcher's options, then every recipe field -- the script arguments (data, mixture, card),
    `DMPOConfig` (all of `DPOConfig` and `TrainingArguments`, plus DMPO's) and `ModelConfig` -- grouped as
    `trl dpo --help` orders them, DMPO's own first (`dmpo_trl.cli.train_help`)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):

        parser.print_help()
        print("\nrecipe fields (in the recipe file, or as flags that override it), DMPO's own first:\n")
        print(recipe_help(), end="")
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


if __name__ == "__main__":  # `python -m dmpo_trl.cli.train` / `accelerate launch -m dmpo_trl.cli.train`
    from dmpo_trl.cli.errors import report_errors

    sys.exit(report_errors("dmpo_trl.cli.train", main))
