"""`dmpo-trl` command line: one sub-command per module of this package (`train`, `convert`, `validate`, ...).

Each command module exposes `register(subparsers)`, which adds its parser and sets `func` (a callable taking the
parsed `argparse.Namespace` and returning an exit code). Heavy imports (torch, trl) happen inside `func`, so
`dmpo-trl --help` stays fast. Every command reports a failure as one line and exits non-zero; `--debug` (or
``DMPO_TRL_DEBUG=1``) shows the traceback instead (`dmpo_trl.cli.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dmpo_trl.cli.errors import report_errors


# Sub-command modules, in the order `--help` lists them.
COMMAND_MODULES = [
    "convert",
    "validate",
    "train",
    "build_pairs",
    "evaluate",
    "pipeline",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmpo-trl", description="DMPO training, data and evaluation tools.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or set DMPO_TRL_DEBUG=1)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dmpo_trl.cli.{name}").register(subparsers)
    for name, sub in subparsers.choices.items():
        if name != "train":  # train's --debug is TrainingArguments.debug; use `dmpo-trl --debug train ...`
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # `train` hands its arguments to TRL's parser untouched (flags override the recipe file).
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if rest and not getattr(args, "accepts_extra_args", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    return report_errors(f"dmpo-trl {args.command}", lambda: args.func(args, rest), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
