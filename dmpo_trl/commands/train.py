"""`dmpo-trl train`: run a recipe in this process, or start it under `accelerate launch`.

    dmpo-trl train --config recipe.yaml [--flag value ...]                    # one process
    dmpo-trl train --accelerate-config zero3 --num-processes 8 --config recipe.yaml [--flag value ...]

Everything this command does not know (`--config` and every recipe flag) goes to `dmpo_trl.train`, i.e. to TRL's
`TrlParser`; flags override the recipe. `--accelerate-config` takes a shipped name (ddp, zero2, zero3, fsdp: files in
`recipes/accelerate_configs/`) or a path, and re-runs `python -m dmpo_trl.train ...` on every process with
`accelerate launch`.
"""

from __future__ import annotations

import argparse
import shlex


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train with DMPO from a recipe (flags override the recipe; see recipes/README.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
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
    group.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print the command and exit")
    parser.set_defaults(func=run, accepts_extra_args=True)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Run the recipe in-process, or build and run the `accelerate launch` command."""
    launch_flags = (args.num_processes, args.main_process_ip, args.main_process_port, args.mixed_precision)
    if args.accelerate_config is None and (any(v is not None for v in launch_flags) or args.num_machines != 1):
        raise SystemExit("dmpo-trl train: process/machine flags need --accelerate-config (e.g. ddp, zero3).")
    if args.accelerate_config is None:
        if args.dry_run:
            print(shlex.join(["python", "-m", "dmpo_trl.train", *rest]))
            return 0
        from dmpo_trl.train import main

        return main(rest)

    import subprocess

    from dmpo_trl.launch.accelerate_configs import (
        LaunchTopology,
        build_accelerate_command,
        default_num_processes,
        launch_env,
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
    return subprocess.call(cmd, env=launch_env())
