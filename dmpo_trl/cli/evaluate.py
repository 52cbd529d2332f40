"""`dmpo-trl evaluate --model PATH --env textworld-express --task coin --episodes N`: roll a model out."""

from __future__ import annotations

import argparse

from dmpo_trl.core.files import atomic_write_json
from dmpo_trl.envs import make_env
from dmpo_trl.envs.evaluate import GoldPolicy, HFPolicy, evaluate_model, evaluate_policy
from dmpo_trl.models import load_model


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="roll a chat model out in an environment on held-out episodes",
        description="Play N held-out episodes with a causal LM (greedy decoding by default) and print the success "
        "rate, mean score, mean steps and invalid-action rate. --model takes a local model folder, a LoRA adapter "
        "folder (adapter_config.json; its base model is loaded), a Hub id (needs network), 'default' for the "
        "embedded SmolLM2-135M-Instruct, or 'gold' for the gold-action oracle.",
    )
    parser.add_argument(
        "--model", required=True, metavar="PATH", help="model folder, adapter folder, Hub id, 'default' or 'gold'"
    )
    parser.add_argument("--env", default="textworld-express", help="textworld-express (twx) or scienceworld")
    parser.add_argument("--task", default=None, help="game/task (default: coin / lifespan-longest-lived)")
    parser.add_argument("--episodes", type=int, default=16, metavar="N", help="number of episodes (default 16)")
    parser.add_argument(
        "--split",
        default="test",
        choices=("train", "dev", "test"),
        help="which of the environment's splits to draw the episodes from (default test)",
    )
    parser.add_argument(
        "--first-variation", type=int, default=0, metavar="I", help="skip the split's first I episodes (default 0)"
    )
    parser.add_argument("--max-steps", type=int, default=10, help="actions per episode (default 10)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens per reply (default 24)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--game-params", default=None, help="TextWorld-Express game parameters")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write figures and episodes as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, rest: list[str]) -> int:

    kwargs = {"game_params": args.game_params} if args.game_params is not None else {}
    env = make_env(args.env, args.task, **kwargs)
    try:
        pool = env.variations(args.split)
        variations = pool[args.first_variation : args.first_variation + args.episodes]
        if len(variations) < args.episodes:
            raise SystemExit(f"{env.describe()} has only {len(pool)} {args.split} episodes")
        if args.model == "gold":
            result = evaluate_policy(env, GoldPolicy(), variations, max_steps=args.max_steps)
        else:
            model, tokenizer = load_model(args.model)
            extra = {"do_sample": True} if args.sample else {}
            result = evaluate_model(
                model,
                tokenizer,
                env,
                variations,
                max_steps=args.max_steps,
                max_new_tokens=args.max_new_tokens,
                policy_factory=lambda m, t, **kw: _policy(m, t, **kw, **extra),
            )
    finally:
        env.close()
    for key, value in result.metrics().items():
        print(f"{key:>20}: {value:.3f}")
    if args.json:
        atomic_write_json(args.json, result.to_dict(), indent=2)
    return 0


def _policy(model, tokenizer, **kwargs):

    return HFPolicy(model, tokenizer, **kwargs)
