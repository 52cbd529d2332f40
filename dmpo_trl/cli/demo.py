"""`dmpo-trl main`: the offline main job of `dmpo_trl.demo` (pairs from TextWorld-Express, DMPO, evaluation)."""

from __future__ import annotations

import argparse
import shlex
import sys

from dmpo_trl.demo.main_job import build_arg_parser, config_from_args, run_main_job


def register(subparsers) -> None:

    parser = subparsers.add_parser(
        "main",
        help="the main job: SFT SmolLM2-135M-Instruct on expert trajectories, pair them with its rollouts, train "
        "with DMPO, evaluate after each stage, report",
        description="Offline main job on TextWorld-Express: the embedded SmolLM2-135M-Instruct is evaluated "
        "untouched, fine-tuned (SFT, LoRA) on expert trajectories, rolled out to pair each expert trajectory with a "
        "worse rollout, trained with DMPO (LoRA, reference = the SFT model) on those pairs, and evaluated on held-out "
        "games after each stage; a Markdown report with plots says what changed.",
    )
    build_arg_parser(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, rest: list[str]) -> int:

    run_main_job(config_from_args(args), command="dmpo-trl " + " ".join(map(shlex.quote, sys.argv[1:])))
    return 0
