"""`run_pipeline(cfg)`: the authors' pipeline (their ``run_dmpo.sh``) on one of the project's environments.

1. SFT on the expert trajectories of ``sft.episodes`` training variations;
2. evaluation of the base model (optional) and of the SFT model on ``eval.episodes`` held-out variations;
3. per seed: explore (sampled rollouts of the SFT model on ``explore.episodes`` of the SFT variations);
4. per seed and setting: ETO pairs of the rollouts with the expert trajectories (noisy / clean);
5. per seed, setting and method: DMPO or multi-turn DPO (LoRA) from the SFT model, reference = the SFT model;
6. evaluation of every trained model on the same held-out variations;
7. with ``rounds: 2``: explore again with each round-1 model, pair, train it further, evaluate;
8. ``report.md`` (tables with 95% intervals, the Fig. 4 analysis, plots) and ``results.json``.

Every stage is cached under ``output_dir`` (`dmpo_trl.pipeline.cache`): running the same command again resumes.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dmpo_trl.core.files import OutputLock, atomic_write_json
from dmpo_trl.envs import make_env
from dmpo_trl.envs.base import AgentEnv
from dmpo_trl.models import resolve_model

from . import stages as st
from .cache import StageRunner, key_hash
from .config import PipelineConfig, config_to_dict, resolve_bf16
from .report import write_report


__all__ = ["run_pipeline"]


@dataclass
class _Parent:
    """The model a run starts from: a full model folder, the adapter on it (explore uses both), the stage key, and
    the merged folder a next round trains from."""

    model: str
    adapter: str | None
    key: str
    merged: str | None = None


#: Explore settings that only the pairing reads: changing them reruns the pairs, not the rollouts.
PAIRING_KEYS = ("max_extra_rejected_turns", "clean_max_extra_rejected_turns")


def _sampling(explore: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in explore.items() if k not in PAIRING_KEYS}


def _env_key(cfg: PipelineConfig) -> dict[str, Any]:
    return {"env": cfg.env, "task": cfg.task, "env_kwargs": cfg.env_kwargs}


def run_pipeline(cfg: PipelineConfig, *, command: str | None = None, env: AgentEnv | None = None) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns the results also written to ``<output_dir>/results.json``.

    `env` (an `AgentEnv`, e.g. a `ToolEnvAdapter` or your own environment) replaces ``cfg.env`` / ``cfg.task``;
    the pipeline closes it at the end. The run holds a lock on ``output_dir`` (`dmpo_trl.core.files.OutputLock`): a
    second run on the same folder fails at once, naming this one's process and host."""
    # Idle OpenMP threads sleep instead of spinning (a shared or small CPU: spinning makes every parallel op wait for
    # descheduled peers); read at torch's first parallel region, so it takes effect only if nothing ran yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with OutputLock(cfg.output_dir, "pipeline run"):  # a second run on this output_dir fails here, naming this one
        return _run_pipeline(cfg, command, env)


def _run_pipeline(cfg: PipelineConfig, command: str | None, env: AgentEnv | None) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.output_dir)
    stages = StageRunner(out, verbose=True)
    import torch

    base_model = resolve_model(cfg.model)
    env_key = _env_key(cfg) if env is None else {"env": env.describe(), "class": type(env).__qualname__}
    env = env if env is not None else make_env(cfg.env, cfg.task, **cfg.env_kwargs)
    try:
        variations = st.choose_variations(env, cfg)
        g_key = {**env_key, "variations": variations, "draws": cfg.expert_draws}
        gold = stages.run("experts", g_key, st.experts_stage, env, variations, cfg.expert_draws)
        experts = st.load_experts(env, stages.path("experts") / "experts.jsonl", "sft")
        x_experts = st.load_experts(env, stages.path("experts") / "experts.jsonl", "explore")
        heldout_gold = {int(v): n for v, n in gold["result"]["heldout"]["gold_lengths"].items()}
        base_key = {**env_key, "model": base_model, "seed": cfg.seed, "experts": gold["run_id"]}

        bf16 = {"bf16": resolve_bf16(cfg.bf16)}  # part of every stage key: it changes the numbers
        sft_key = {**base_key, **bf16, "sft": config_to_dict(cfg)["sft"]}
        sft = stages.run("sft", sft_key, st.sft_stage, cfg, env, experts, base_model)
        sft_model = sft["result"]["model"]
        seen = {"seen": variations["seen"]}  # the held-out and the seen games are evaluated in one stage
        eval_key = {"eval": config_to_dict(cfg)["eval"], "heldout": variations["heldout"], **seen, **bf16}
        evals: dict[str, dict[str, Any]] = {}
        if cfg.eval.base_model:
            key = {**eval_key, "model": base_model, **env_key}
            evals["base"] = stages.run(
                "eval/base", key, st.eval_stage, cfg, env, variations["heldout"], base_model, **seen
            )
        key = {**eval_key, "sft": sft["run_id"]}
        evals["sft"] = stages.run("eval/sft", key, st.eval_stage, cfg, env, variations["heldout"], sft_model, **seen)

        runs: list[dict[str, Any]] = []
        explores: dict[str, Any] = {}
        pairs: dict[str, Any] = {}
        settings = config_to_dict(cfg)
        for seed in cfg.seeds:
            # every (setting, method) starts from the SFT model; round 1's explore and pairs are shared
            parents = {(s, m.name): _Parent(sft_model, None, sft["run_id"]) for s in cfg.settings for m in cfg.methods}
            for round_index in range(cfg.rounds):
                tag = f"seed{seed}/r{round_index + 1}"
                last_round = round_index + 1 == cfg.rounds
                for setting in cfg.settings:
                    for m_index, method in enumerate(cfg.methods):
                        if not method.trains_in(setting):
                            continue
                        parent = parents[(setting, method.name)]
                        run_name = f"{tag}/{setting}-{method.name}"
                        x_name = f"{tag}/explore" if round_index == 0 else f"{run_name}/explore"
                        x_key = {"explore": _sampling(settings["explore"]), "seed": seed, "parent": parent.key, **bf16}
                        x_key["variations"] = variations["explore"]
                        explored = stages.run(
                            x_name,
                            x_key,
                            st.explore_stage,
                            cfg,
                            env,
                            variations["explore"],
                            seed,
                            parent.model,
                            parent.adapter,
                        )
                        explores[x_name] = explored["result"]
                        p_name = f"{tag}/pairs-{setting}" if round_index == 0 else f"{run_name}/pairs"
                        p_key = {"explore": explored["run_id"], "setting": setting, "round": round_index}
                        p_key["experts"] = gold["run_id"]
                        p_key["cap"] = cfg.explore.cap_for(setting)
                        rollouts_file = stages.path(x_name) / "rollouts.jsonl"
                        paired = stages.run(
                            p_name, p_key, st.pairs_stage, cfg, env, x_experts, rollouts_file, setting, round_index
                        )
                        pairs[p_name] = paired["result"]
                        base_dir = parent.merged or sft_model
                        t_key = {
                            "train": settings["train"],
                            "method": settings["methods"][m_index],
                            "seed": seed,
                            **bf16,
                        }
                        t_key.update(pairs=paired["run_id"], base=parent.key, merge=not last_round)
                        pairs_file = stages.path(p_name) / "train.jsonl"
                        trained = stages.run(
                            f"{run_name}/train",
                            t_key,
                            st.train_stage,
                            cfg,
                            method,
                            pairs_file,
                            seed,
                            base_dir,
                            merge=not last_round,
                        )
                        adapter = trained["result"]["adapter"]
                        if trained["result"].get("model"):  # full fine-tuning: the trained model itself
                            base_dir, adapter = trained["result"]["model"], None
                        e_key = {**eval_key, "train": trained["run_id"]}
                        evaluated = stages.run(
                            f"{run_name}/eval",
                            e_key,
                            st.eval_stage,
                            cfg,
                            env,
                            variations["heldout"],
                            base_dir,
                            adapter,
                            **seen,
                        )
                        runs.append(
                            {
                                "seed": seed,
                                "round": round_index + 1,
                                "folder": run_name,
                                "setting": setting,
                                "method": method.name,
                                "turn_weighting": method.turn_weighting,
                                "gamma": method.gamma,
                                "pairs": paired["result"]["pairs"],
                                "train": trained["result"],
                                "eval": evaluated["result"],
                            }
                        )
                        merged = trained["result"].get("merged")
                        parents[(setting, method.name)] = _Parent(base_dir, adapter, trained["run_id"], merged)
    finally:
        env.close()

    results = {
        "command": command or "python -m dmpo_trl.pipeline " + " ".join(map(shlex.quote, sys.argv[1:])),
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'}",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "runtime_s": time.perf_counter() - t_start,
        "config": config_to_dict(cfg),
        "config_hash": key_hash(config_to_dict(cfg)),
        "bf16": resolve_bf16(cfg.bf16),
        "model": base_model,
        "env_name": env_key["env"] if "class" in env_key else f"{cfg.env}/{cfg.task}",
        "variations": variations,
        "heldout_gold_lengths": heldout_gold,
        "gold_action_kinds": gold["result"]["heldout"]["action_kinds"],
        "sft": sft["result"],
        "evals": {name: rec["result"] for name, rec in evals.items()},
        "explore": explores,
        "pairs": pairs,
        "runs": runs,
        "stage_log": stages.log,
    }
    atomic_write_json(out / "results.json", results)

    write_report(out, results)
    print(f"\nreport: {out / 'report.md'}  (total {results['runtime_s']:.0f} s)")
    return results
