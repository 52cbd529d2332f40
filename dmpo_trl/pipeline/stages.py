"""The pipeline's stages, each a function of its output folder (see `dmpo_trl.pipeline.cache`).

* `experts_stage`: the expert trajectories of the SFT and held-out variations, drawn once -> ``experts.jsonl``;
* `sft_stage`: SFT on the expert trajectories of the SFT variations -> ``model/`` (LoRA merged, safetensors);
* `eval_stage`: greedy rollouts on the held-out variations -> ``rollouts.jsonl`` + figures per episode;
* `explore_stage`: sampled rollouts on the explore variations -> ``rollouts.jsonl`` (actions, replies, observations);
* `pairs_stage`: ETO pairing of the explored rollouts with the expert trajectories -> ``train.jsonl``;
* `train_stage`: DMPOTrainer (DMPO or multi-turn DPO) with LoRA on the pairs -> ``adapter/`` (+ ``merged/`` when a
  later round starts from it).

Rollouts are stored with their observations and re-checked when read back (`dmpo_trl.pipeline.storage`):
`load_rollouts` replays every action from reset and fails if an observation differs, so cached rollouts are real
environment trajectories too.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from dmpo_trl.envs.base import AgentEnv, DMPOEnvError
from dmpo_trl.envs.explore import expert_trajectories, explore, pair_with_experts
from dmpo_trl.envs.rollouts import generate_rollouts, rollouts_to_eval
from dmpo_trl.envs.trajectory import Trajectory
from dmpo_trl.models import load_model

from .config import Method, PipelineConfig, resolve_bf16
from .sft import checkpointing_off, lora_config, sft_dataset, train_sft
from .storage import _read_jsonl, _write_jsonl, load_experts, load_rollouts, save_rollouts


__all__ = [
    "action_kinds",
    "choose_variations",
    "eval_stage",
    "experts_stage",
    "explore_stage",
    "load_experts",
    "load_policy",
    "load_rollouts",
    "pairs_stage",
    "save_rollouts",
    "sft_stage",
    "train_stage",
]


def choose_variations(env: AgentEnv, cfg: PipelineConfig) -> dict[str, list[int]]:
    """SFT variations (train split); explore variations (the first of the SFT ones, or with ``explore.games:
    disjoint`` training variations SFT did not see); held-out (the eval split); "seen" (``eval.seen_episodes``
    training variations no stage uses). Seeded by `cfg.seed`: the same recipe draws the same games."""
    rng = random.Random(f"{cfg.seed}:{env.describe()}:pipeline")
    train_pool, heldout_pool = env.variations("train"), env.variations(cfg.eval.split)
    disjoint = cfg.explore.games == "disjoint"
    needed = cfg.sft.episodes + (cfg.explore.episodes if disjoint else 0) + cfg.eval.seen_episodes
    for name, pool, n in (("train", train_pool, needed), (cfg.eval.split, heldout_pool, cfg.eval.episodes)):
        if n > len(pool):
            raise ValueError(f"{env.describe()} has {len(pool)} {name} variations, the recipe asks for {n}")
    if not disjoint and cfg.explore.episodes > cfg.sft.episodes:
        raise ValueError(
            "explore.episodes must be <= sft.episodes with explore.games: sft (the explored tasks are SFT tasks)"
        )
    order = rng.sample(train_pool, len(train_pool))
    sft = order[: cfg.sft.episodes]
    rest = order[cfg.sft.episodes :]
    explore = rest[: cfg.explore.episodes] if disjoint else sft[: cfg.explore.episodes]
    unused = rest[cfg.explore.episodes :] if disjoint else rest
    if cfg.eval.min_gold_steps <= 1:
        heldout = sorted(rng.sample(heldout_pool, cfg.eval.episodes))
        seen = sorted(unused[: cfg.eval.seen_episodes])
    else:
        heldout = sorted(_needing_steps(env, rng, heldout_pool, cfg.eval.episodes, cfg.eval.min_gold_steps))
        seen = sorted(_needing_steps(env, rng, unused, cfg.eval.seen_episodes, cfg.eval.min_gold_steps))
    if (set(sft) | set(explore) | set(seen)) & set(heldout) or set(seen) & (set(sft) | set(explore)):
        raise DMPOEnvError(f"{env.describe()}: training, seen and held-out variations overlap")
    return {"sft": sorted(sft), "explore": sorted(explore), "heldout": heldout, "seen": seen}


#: How many gold paths `_needing_steps` draws per game (some environments draw a random gold path at every reset:
#: TextWorld-Express's gold agent explores rooms in a random order); the shortest is how many actions the game needs.
GOLD_DRAWS = 16


def _needing_steps(env: AgentEnv, rng: random.Random, pool: list[int], n: int, min_steps: int) -> list[int]:
    """`n` variations of `pool` (in a seeded random order) whose shortest gold path, over `GOLD_DRAWS` draws, has
    >= `min_steps` actions."""

    chosen: list[int] = []
    if n == 0:
        return chosen
    for variation in rng.sample(pool, len(pool)):
        lengths = [t.num_turns for _ in range(GOLD_DRAWS) for t in expert_trajectories(env, [variation]).values()]
        if lengths and min(lengths) >= min_steps:
            chosen.append(int(variation))
            if len(chosen) == n:
                return chosen
    raise ValueError(
        f"{env.describe()}: only {len(chosen)} of {len(pool)} held-out variations need >= {min_steps} gold actions, "
        f"the recipe asks for {n} (lower eval.min_gold_steps or eval.episodes)"
    )


def load_policy(model_dir: str | Path, adapter_dir: str | Path | None = None):
    """(model, tokenizer) in float32: a full model folder, optionally with a LoRA adapter on top."""
    import torch

    model, tokenizer = load_model(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model, tokenizer


def _autocast(cfg: PipelineConfig):
    import torch

    return torch.bfloat16 if resolve_bf16(cfg.bf16) else None


def _quiet(trainer, progress: bool) -> None:
    """Without progress bars, no per-step log lines either (the figures are in the report)."""
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)


def _log_summary(log_history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    logs = [e for e in log_history if "loss" in e]
    out: dict[str, Any] = {"steps": len(logs)}
    for key in keys:
        values = [e[key] for e in logs if key in e]
        if values:
            out[f"first_{key}"], out[f"last_{key}"] = values[0], values[-1]
    return out


EXPERT_SPLITS = ("sft", "explore", "heldout", "seen")


def experts_stage(folder: Path, env: AgentEnv, variations: dict[str, list[int]], draws: int = 1) -> dict[str, Any]:
    """The expert (gold) trajectory of every SFT, explore, held-out and seen variation, drawn once and stored in
    ``experts.jsonl``: some environments draw their gold path at random at every reset (TextWorld-Express with
    several rooms), so every later stage reads these instead of asking the environment again. With `draws` > 1
    each game's expert is the shortest of that many gold draws (`PipelineConfig.expert_draws`)."""

    rows, result = [], {}
    drawn = expert_trajectories(env, sorted({v for split in EXPERT_SPLITS for v in variations[split]}), draws)
    for split in EXPERT_SPLITS:  # one draw per game: an explored SFT game pairs with the expert SFT trained on
        experts = {v: drawn[v] for v in variations[split] if v in drawn}
        rows += [{"split": split, "variation": v, "actions": t.actions} for v, t in experts.items()]
        result[split] = {
            "gold_lengths": {str(v): t.num_turns for v, t in experts.items()},
            "skipped": sorted(set(variations[split]) - set(experts)),
            "action_kinds": action_kinds([a for t in experts.values() for a in t.actions]),
        }
    _write_jsonl(rows, folder / "experts.jsonl")
    return result


def sft_stage(folder: Path, cfg: PipelineConfig, env: AgentEnv, experts: dict[int, Trajectory], base_model: str):
    import torch

    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(base_model)
    rows, stats = sft_dataset(env, experts.values(), tokenizer, cfg.sft.max_length)
    s = cfg.sft
    lora = None if s.lora_r <= 0 else {"r": s.lora_r, "alpha": s.lora_alpha, "last_layers": s.lora_last_layers}
    trainer = train_sft(
        model,
        tokenizer,
        rows,
        output_dir=str(folder / "trainer"),
        epochs=s.epochs,
        learning_rate=s.learning_rate,
        batch_size=s.batch_size,
        lora=lora,
        seed=cfg.seed,
        max_length=s.max_length,
        bf16=resolve_bf16(cfg.bf16),
        progress=cfg.progress,
    )
    trained = trainer.model.merge_and_unload() if lora is not None else trainer.model
    trained.save_pretrained(folder / "model", safe_serialization=True)
    tokenizer.save_pretrained(folder / "model")
    history = [e for e in trainer.state.log_history if "loss" in e]
    return {
        "model": str((folder / "model").resolve()),
        "experts": len(experts),
        "gold_lengths": dict(sorted(Counter(t.num_turns for t in experts.values()).items())),
        "data": stats,
        "train": _log_summary(trainer.state.log_history, ("loss", "mean_token_accuracy")),
        "loss_curve": [(e["step"], e["loss"]) for e in history],
    }


def action_kinds(actions: list[str]) -> dict[str, int]:
    """Actions counted by their first word (``move``, ``take``, ...); empty replies as ``(none)``."""
    return dict(Counter((a.split(" ", 1)[0] if a.strip() else "(none)") for a in actions).most_common())


def eval_stage(
    folder: Path, cfg: PipelineConfig, env: AgentEnv, heldout: list[int], model_dir, adapter_dir=None, seen=()
):
    """Greedy rollouts on the held-out variations (``rollouts.jsonl``) and, when `seen` is not empty, on the seen
    ones (``seen/rollouts.jsonl``, the result's ``"seen"``)."""
    model, tokenizer = load_policy(model_dir, adapter_dir)
    result = _evaluate(folder, cfg, env, heldout, model, tokenizer)
    if seen:
        result["seen"] = _evaluate(folder / "seen", cfg, env, list(seen), model, tokenizer)
    return result


def _evaluate(folder: Path, cfg: PipelineConfig, env: AgentEnv, variations: list[int], model, tokenizer):
    e = cfg.eval
    rollouts = generate_rollouts(
        model,
        tokenizer,
        env,
        variations,
        max_steps=e.max_steps,
        max_new_tokens=e.max_new_tokens,
        batch_size=e.batch_size,
        progress=cfg.progress,
        desc=f"eval {folder.parent.name}/{folder.name}",
        autocast_dtype=_autocast(cfg),
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_rollouts(rollouts, folder / "rollouts.jsonl")
    result = rollouts_to_eval(rollouts)
    return {
        "metrics": result.metrics(),
        "episodes": [
            {
                "variation": r.variation,
                "success": r.success,
                "score": r.final_score,
                "steps": r.num_turns,
                "invalid": r.num_invalid,
            }
            for r in rollouts
        ],
        "action_kinds": action_kinds([a for r in rollouts for a in r.actions]),
        "samples": [{"variation": r.variation, "actions": r.actions, "success": r.success} for r in rollouts[:4]],
    }


def explore_stage(
    folder: Path, cfg: PipelineConfig, env: AgentEnv, variations: list[int], seed: int, model_dir, adapter_dir=None
):

    model, tokenizer = load_policy(model_dir, adapter_dir)
    x = cfg.explore
    rollouts = explore(
        model,
        tokenizer,
        env,
        variations,
        num_rollouts=x.num_rollouts,
        temperature=x.temperature,
        top_p=x.top_p,
        max_steps=x.max_steps,
        max_new_tokens=x.max_new_tokens,
        batch_size=x.batch_size,
        seed=seed,
        progress=cfg.progress,
        autocast_dtype=_autocast(cfg),
    )
    save_rollouts(rollouts, folder / "rollouts.jsonl")
    n = max(len(rollouts), 1)
    return {
        "rollouts": len(rollouts),
        "success_rate": sum(r.success for r in rollouts) / n,
        "mean_score": sum(r.final_score for r in rollouts) / n,
        "invalid_action_rate": sum(r.num_invalid for r in rollouts) / max(sum(r.num_turns for r in rollouts), 1),
        "tasks_all_solved": sum(
            all(r.success for r in rollouts if r.variation == v) for v in {r.variation for r in rollouts}
        ),
    }


def pairs_stage(
    folder: Path,
    cfg: PipelineConfig,
    env: AgentEnv,
    experts: dict[int, Trajectory],
    rollouts_file,
    setting: str,
    round_index: int,
):

    rollouts = load_rollouts(env, Path(rollouts_file))
    rows, stats = pair_with_experts(
        env,
        experts,
        rollouts,
        setting=setting,
        max_extra_rejected_turns=cfg.explore.cap_for(setting),
        round_index=round_index,
    )
    _write_jsonl(rows, folder / "train.jsonl")
    return {
        "pairs": len(rows),
        "stats": stats,
        "tasks": len({r["variation"] for r in rows}),
        "rejected_turns": dict(sorted(Counter(r["rejected_num_turns"] for r in rows).items())),
        "rejected_invalid_share": sum(r["rejected_num_invalid"] > 0 for r in rows) / max(len(rows), 1),
    }


def train_stage(
    folder: Path, cfg: PipelineConfig, method: Method, pairs_file, seed: int, base_model, merge: bool = False
):
    import torch
    from datasets import Dataset

    # lazy: loads TRL; only the DMPO stage needs it
    from dmpo_trl import DMPOConfig, DMPOTrainer

    rows = _read_jsonl(Path(pairs_file))
    t = cfg.train
    if t.max_pairs is not None and len(rows) > t.max_pairs:
        rows = random.Random(f"{seed}:pairs").sample(rows, t.max_pairs)
    if not rows:  # every rollout tied with its expert (or none was clean): nothing to train, the model stays
        result = {
            "adapter": None,
            "pairs": 0,
            "runtime_s": 0.0,
            "train": {"steps": 0},
            "curves": {},
            "untrained": True,
        }
        return {**result, **({"merged": str(base_model)} if merge else {})}
    columns = ["prompt", "chosen", "rejected"] + (["tools"] if "tools" in rows[0] else [])
    dataset = Dataset.from_list([{k: r[k] for k in columns} for r in rows])
    torch.manual_seed(seed)
    model, tokenizer = load_policy(base_model)
    args = DMPOConfig(
        output_dir=str(folder / "trainer"),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=method.lr(t),
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # transformers 5: a value below 1 is a share of the optimizer steps
        beta=t.beta,
        gamma=method.gamma,
        turn_weighting=method.turn_weighting,
        max_length=t.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=resolve_bf16(cfg.bf16),
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=not cfg.progress,
        **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, method.nll(t)]} if method.nll(t) else {}),
        **checkpointing_off(DMPOConfig),
    )
    peft = None  # lora_r <= 0: full fine-tuning, the reference a frozen copy of the starting model
    if t.lora_r > 0:
        peft = lora_config(model.config.num_hidden_layers, t.lora_r, t.lora_alpha, t.lora_last_layers)
    trainer = DMPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft)
    _quiet(trainer, cfg.progress)
    trainer.train()
    if peft is None:  # a full model: later stages load it as the model, with no adapter
        trainer.model.save_pretrained(folder / "model", safe_serialization=True)
        tokenizer.save_pretrained(folder / "model")
    else:
        trainer.model.save_pretrained(folder / "adapter")
        tokenizer.save_pretrained(folder / "adapter")
    result = {
        "learning_rate": method.lr(t),
        "sft_weight": method.nll(t),
        "loss_type": list(args.loss_type),
        "loss_weights": None if args.loss_weights is None else list(args.loss_weights),
        "optimizer_steps": trainer.state.global_step,
        "adapter": str((folder / "adapter").resolve()) if peft is not None else None,
        "model": str((folder / "model").resolve()) if peft is None else None,
        "pairs": len(rows),
        "runtime_s": trainer.state.log_history[-1].get("train_runtime"),
        "train": _log_summary(trainer.state.log_history, ("loss", "rewards/margins", "rewards/accuracies")),
        "curves": {
            key: [(e["step"], e[key]) for e in trainer.state.log_history if key in e and "loss" in e]
            for key in ("loss", "rewards/margins")
        },
        "data_stats": trainer.dmpo_data_stats,
    }
    if merge and peft is not None:
        trainer.model.merge_and_unload().save_pretrained(folder / "merged", safe_serialization=True)
        tokenizer.save_pretrained(folder / "merged")
        result["merged"] = str((folder / "merged").resolve())
    elif merge:
        result["merged"] = result["model"]
    return result
