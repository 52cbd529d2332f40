"""`dmpo-trl validate DATA --model NAME_OR_PATH`: check a dataset as the trainer would and print a report.

It reads DATA with the loader `dmpo-trl train` uses (`dmpo_trl.data.loading`), loads the tokenizer the same way
(`dmpo_trl.models.load_tokenizer`, with the same chat template override) and truncates at the trainer's default
``max_length`` unless told otherwise, so its rows and token counts are the ones `train` trains on. With
``--config RECIPE`` it takes the data, model, ``max_length``, chat template and ``skip_invalid_pairs`` from the recipe.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from dmpo_trl.cli.train import make_parser
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.models import load_tokenizer


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a preference dataset row by row and report actions, tokens and truncation",
        description="Check every row of DATA as DMPOTrainer would (structure, chat-template alignment, truncation) "
        "and print a report. DATA is read as `dmpo-trl train` reads it, and max_length defaults to the trainer's "
        "(1024). Exits 1 at the first bad row unless --skip-invalid, and when no valid pair is left.",
    )
    parser.add_argument(
        "data", metavar="DATA", nargs="*", help="data files, folders or globs (.json, .jsonl, .parquet)"
    )
    parser.add_argument(
        "--config",
        metavar="RECIPE",
        help="take data_files, model_name_or_path, max_length, chat_template_path and skip_invalid_pairs from a "
        "training recipe (flags given here win)",
    )
    parser.add_argument(
        "--from",
        dest="fmt",
        default="project",
        choices=("project", "eto", "sharegpt", "openai"),
        help="format of DATA (default: project); other formats are converted first",
    )
    parser.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help="tokenizer to validate with: local folder, Hub name, a .gguf file, or 'default' (the embedded "
        "SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--max-length",
        "--max_length",
        dest="max_length",
        metavar="N|none",
        default=None,
        help="the trainer's max_length (tokens per trajectory); default: the recipe's, else DMPOConfig's (1024); "
        "'none': no truncation",
    )
    parser.add_argument(
        "--skip-invalid",
        "--skip_invalid_pairs",
        dest="skip_invalid",
        nargs="?",
        const="true",
        default=None,
        metavar="true|false",
        type=_flag,
        help="as the trainer's skip_invalid_pairs: report bad rows (count and reasons) instead of stopping at the "
        "first one; 'false': stop at every bad row, over-long ones too (strict). Default: the recipe's, else the "
        "trainer's default (rows whose prompt leaves no room for an action are reported as skipped, other bad rows "
        "stop)",
    )
    parser.add_argument(
        "--chat-template",
        "--chat_template_path",
        dest="chat_template",
        metavar="FILE",
        default=None,
        help="use this Jinja chat template instead of the tokenizer's (as `dmpo-trl train --chat_template_path`)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--per-row", action="store_true", help="with --json: every valid pair's token counts too")
    parser.set_defaults(func=run)


@functools.lru_cache(maxsize=2)  # loading from a GGUF file takes seconds; repeated in-process calls reuse it
def _tokenizer(name_or_path: str, chat_template: str | None):

    return load_tokenizer(name_or_path, chat_template_path=chat_template, require_chat_template=True)


#: `DMPOConfig`'s default `max_length` (TRL's `DPOConfig`'s): what `dmpo-trl train` truncates at when the recipe does
#: not say. A constant, so that `validate` does not import TRL for it; tests/cli/test_validate_vs_train.py checks that
#: it is the trainer's.
TRAINER_MAX_LENGTH = 1024


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Data, model, max_length, chat template and skip flag: the flags, else the recipe, else the trainer's defaults."""
    recipe: dict[str, Any] = {}
    if args.config:  # read and checked as `dmpo-trl train` reads and checks it
        # lazy: loads pyarrow; keeps `dmpo-trl --help` fast
        from dmpo_trl.cli.recipe_file import check_recipe, read_recipe

        recipe = read_recipe(args.config)
        check_recipe(make_parser(), recipe, args.config)
    data = list(args.data) or recipe.get("data_files") or recipe.get("dataset_name") or []
    data = [data] if isinstance(data, str) else list(data)
    if not data:
        raise ValueError("no data: give DATA (files, folders or globs) or --config RECIPE with data_files")
    model = args.model or recipe.get("model_name_or_path")
    if not model:
        raise ValueError("no tokenizer: give --model NAME_OR_PATH (or --config RECIPE with model_name_or_path)")
    if args.max_length is not None:
        text = str(args.max_length).strip().lower()
        max_length = None if text == "none" else _positive_int(text)
    elif "max_length" in recipe:
        max_length = recipe["max_length"]
    else:
        max_length = TRAINER_MAX_LENGTH
    skip = args.skip_invalid if args.skip_invalid is not None else recipe.get("skip_invalid_pairs")
    template = args.chat_template or recipe.get("chat_template_path")
    return {"data": data, "model": model, "max_length": max_length, "skip_invalid": skip, "chat_template": template}


def _flag(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered not in ("true", "false", "yes", "no", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return lowered in ("true", "yes", "1")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--max-length must be a number >= 1 or 'none', got {text!r}")
    return int(text)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    # lazy: loads pyarrow; keeps `dmpo-trl --help` fast
    from dmpo_trl.data.loading import load_preference_files

    # lazy: loads torch and datasets; keeps `dmpo-trl --help` fast
    from dmpo_trl.data.validation import report_json, scan_files, validate_dataset, validate_files

    opts = settings(args)
    limits = {"max_length": opts["max_length"], "skip_invalid": opts["skip_invalid"], "per_row": args.per_row}
    if args.fmt == "project":  # streamed twice, in bounded memory: the checks first, before the tokenizer loads
        scan_files(opts["data"], skip_invalid=opts["skip_invalid"])
        report = validate_files(opts["data"], _tokenizer(opts["model"], opts["chat_template"]), **limits)
        name = ", ".join(map(str, opts["data"]))
    else:  # converted first: the data first, a bad file fails before the tokenizer loads
        loaded = load_preference_files(opts["data"], skip_invalid=opts["skip_invalid"], convert_from=args.fmt)
        report = validate_dataset(loaded, _tokenizer(opts["model"], opts["chat_template"]), **limits)
        name = loaded.name
    print(report_json(report) if args.json else report.format())
    if report.pairs == 0:
        raise DMPODataError(f"no valid pair: all {report.rows} rows were skipped", source=name)
    return 0
