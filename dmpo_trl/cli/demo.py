"""`dmpo-trl main`: the offline main job of `dmpo_trl.demo` (pairs from TextWorld-Express, DMPO, evaluation)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from dmpo_trl.demo.main_job import build_arg_parser

    parser = subparsers.add_parser(
        "main",
        help="the main job: build pairs, train SmolLM2-135M-Instruct with DMPO, evaluate before/after, report",
        description="Offline main job: preference pairs from TextWorld-Express, DMPO with LoRA on the embedded "
        "SmolLM2-135M-Instruct, evaluation on held-out games before and after, and a Markdown report with plots.",
    )
    build_arg_parser(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    import shlex
    import sys

    from dmpo_trl.demo.main_job import config_from_args, run_main_job

    run_main_job(config_from_args(args), command="dmpo-trl " + " ".join(map(shlex.quote, sys.argv[1:])))
    return 0
