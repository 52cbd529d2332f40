"""`dmpo-trl validate DATA --model NAME_OR_PATH`: check a dataset as the trainer would and print a report."""

from __future__ import annotations

import argparse
import functools
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a preference dataset row by row and report actions, tokens and truncation",
        description="Check every row of DATA as DMPOTrainer would (structure, chat-template alignment, truncation) "
        "and print a report. Exits 1 at the first bad row unless --skip-invalid.",
    )
    parser.add_argument("data", metavar="DATA", help="dataset file: .json, .jsonl or .parquet")
    parser.add_argument(
        "--from",
        dest="fmt",
        default="project",
        choices=("project", "eto", "sharegpt", "openai"),
        help="format of DATA (default: project); other formats are converted first",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help="tokenizer to validate with: local folder, Hub name, or a .gguf file",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        metavar="N",
        help="the trainer's max_length (tokens per trajectory); default: no truncation",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="report bad rows (count and reasons) instead of stopping at the first one",
    )
    parser.add_argument(
        "--chat-template", metavar="FILE", default=None, help="use this Jinja chat template instead of the tokenizer's"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


@functools.lru_cache(maxsize=2)  # loading from a GGUF file takes seconds; repeated in-process calls reuse it
def _tokenizer(name_or_path: str, chat_template: str | None):
    from dmpo_trl.cli.modeling import load_tokenizer

    return load_tokenizer(name_or_path, chat_template_path=chat_template)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    from dmpo_trl.data.convert import convert
    from dmpo_trl.data.io import read_records
    from dmpo_trl.data.validation import report_json, validate_dataset
    from dmpo_trl.errors import DMPODataError

    tokenizer = _tokenizer(args.model, args.chat_template)
    try:
        records = read_records(args.data)
        if args.fmt != "project":  # convert first (the converters' row checks run there)
            records = convert(records, args.fmt)
        report = validate_dataset(records, tokenizer, max_length=args.max_length, skip_invalid=args.skip_invalid)
    except DMPODataError as err:
        print(f"dmpo-trl validate: {args.data}: {err}", file=sys.stderr)
        return 1
    print(report_json(report) if args.json else report.format())
    return 0
