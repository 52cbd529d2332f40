"""`dmpo-trl` command line: one sub-command per module of this package (`train`, `convert`, `validate`, ...).

Each command module exposes `register(subparsers)`, which adds its parser and sets `func` (a callable taking the
parsed `argparse.Namespace` and returning an exit code). Heavy imports (torch, trl) happen inside `func`, so
`dmpo-trl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys


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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dmpo_trl.cli.{name}").register(subparsers)
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
    return int(args.func(args, rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
