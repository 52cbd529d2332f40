"""`dmpo-trl pipeline --config RECIPE`: SFT -> explore -> pairs -> DMPO / multi-turn DPO -> evaluate, cached."""

from __future__ import annotations

import argparse
import shlex
import sys

from dmpo_trl.cli.errors import report_errors


def add_arguments(parser: argparse.ArgumentParser, debug: bool = True) -> argparse.ArgumentParser:
    """The pipeline's flags; `dmpo-trl pipeline` gets ``--debug`` from `dmpo-trl` itself (``debug=False``)."""
    parser.add_argument("--config", required=True, metavar="RECIPE", help="pipeline recipe (YAML)")
    parser.add_argument("--quick", action="store_true", help="apply the recipe's `quick` overrides (a short run)")
    parser.add_argument("--output-dir", default=None, help="where stages, report and results go (recipe default)")
    parser.add_argument("--model", default=None, help="model folder or Hub id instead of the recipe's")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds instead of the recipe's, e.g. 0,1,2")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if debug:
        parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="the authors' pipeline: SFT, explore, pairs, DMPO or multi-turn DPO, evaluation, one report",
        description="Run (or resume: finished stages are read from OUTPUT_DIR) the recipe's pipeline: SFT on expert "
        "trajectories, rollouts of the SFT model on training tasks (greedy by default), ETO pairs (noisy / clean), preference "
        "training per method and seed, greedy evaluation on held-out tasks, report.md with plots.",
    )
    add_arguments(parser, debug=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, rest: list[str] | None = None) -> int:

    # lazy: loads torch; keeps `dmpo-trl --help` fast
    from dmpo_trl.pipeline.config import load_recipe

    # lazy: loads torch; keeps `dmpo-trl --help` fast
    from dmpo_trl.pipeline.runner import run_pipeline

    overrides: dict = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.model:
        overrides["model"] = args.model
    if args.seeds:
        overrides["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.no_progress:
        overrides["progress"] = False
    cfg = load_recipe(args.config, quick=args.quick, overrides=overrides)
    run_pipeline(cfg, command="dmpo-trl " + " ".join(map(shlex.quote, sys.argv[1:])))
    return 0


def main(argv: list[str] | None = None) -> int:

    parser = add_arguments(argparse.ArgumentParser(prog="python -m dmpo_trl.pipeline", description=__doc__))
    args = parser.parse_args(argv)
    return report_errors("python -m dmpo_trl.pipeline", lambda: run(args), debug=args.debug)
