"""`dmpo-trl build-pairs`: preference pairs (gold vs. noisy/clean losing trajectories) from a real environment."""

from __future__ import annotations

import argparse

from dmpo_trl.core.files import atomic_write_json
from dmpo_trl.envs import make_env
from dmpo_trl.envs.pairs import build_splits


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-pairs",
        help="build preference pairs of whole trajectories by stepping a real environment",
        description="Step TextWorld-Express or ScienceWorld to build prompt/chosen/rejected pairs: chosen is the gold "
        "trajectory, rejected a noisy (repeated/invalid actions) or clean (valid but suboptimal) one. Writes "
        "OUT/train.jsonl and OUT/heldout.jsonl from disjoint episodes.",
    )
    parser.add_argument("--env", default="textworld-express", help="textworld-express (twx) or scienceworld")
    parser.add_argument("--task", default=None, help="game/task (default: coin / lifespan-longest-lived)")
    parser.add_argument("--setting", default="noisy", choices=("noisy", "clean"), help="kind of losing trajectory")
    parser.add_argument("--train", type=int, default=64, metavar="N", help="training episodes (default 64)")
    parser.add_argument("--heldout", type=int, default=16, metavar="N", help="held-out episodes (default 16)")
    parser.add_argument(
        "--pairs-per-episode", type=int, default=1, metavar="K", help="losing trajectories per episode"
    )
    parser.add_argument(
        "--max-extra-turns",
        type=int,
        default=2,
        metavar="N",
        help="a losing trajectory has at most len(gold)+N actions (default 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same pairs)")
    parser.add_argument(
        "--game-params", default=None, help="TextWorld-Express game parameters, e.g. numLocations=3,includeDoors=0"
    )
    parser.add_argument("--simplifications", default=None, help="ScienceWorld simplifications (default: easy)")
    parser.add_argument("--output-dir", "-o", required=True, metavar="OUT", help="where to write the JSONL files")
    parser.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO_ID",
        help="also push both splits to this Hub dataset repository (needs network access and a login)",
    )
    parser.add_argument("--public", action="store_true", help="make the Hub repository public (default private)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    # lazy: loads pyarrow; keeps `dmpo-trl --help` fast
    from dmpo_trl.envs.io import push_to_hub, save_jsonl_splits

    kwargs = {}
    if args.game_params is not None:
        kwargs["game_params"] = args.game_params
    if args.simplifications is not None:
        kwargs["simplifications"] = args.simplifications
    env = make_env(args.env, args.task, **kwargs)
    try:
        splits = build_splits(
            env,
            num_train=args.train,
            num_heldout=args.heldout,
            setting=args.setting,
            seed=args.seed,
            pairs_per_variation=args.pairs_per_episode,
            max_extra_turns=args.max_extra_turns,
        )
    finally:
        env.close()
    data = {"train": splits.train, "heldout": splits.heldout}
    paths = save_jsonl_splits(data, args.output_dir)
    info = {
        "env": env.env_name,
        "task": env.task,
        "setting": args.setting,
        "seed": args.seed,
        "train_pairs": len(splits.train),
        "heldout_pairs": len(splits.heldout),
        "train_variations": splits.train_variations,
        "heldout_variations": splits.heldout_variations,
        "skipped_variations": splits.info["skipped"],
        "files": {k: str(v) for k, v in paths.items()},
    }

    atomic_write_json(f"{args.output_dir}/build_info.json", info, indent=2)
    print(f"{len(splits.train)} train pairs, {len(splits.heldout)} held-out pairs -> {args.output_dir}")
    if splits.info["skipped"]:
        print(f"skipped {len(splits.info['skipped'])} episodes whose gold path fails: {splits.info['skipped']}")
    if args.push_to_hub:
        push_to_hub(data, args.push_to_hub, private=not args.public)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0
