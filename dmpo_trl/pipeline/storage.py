"""What the pipeline's stages write and read back: JSONL rows, explored rollouts and expert trajectories.

Everything read back is replayed in the environment from reset, so a cached rollout or expert trajectory is still a
real environment trajectory (`load_rollouts` and `load_experts` raise `DMPOEnvError` when it no longer replays).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmpo_trl.core.files import atomic_write_text
from dmpo_trl.envs.base import AgentEnv, DMPOEnvError
from dmpo_trl.envs.rollouts import Rollout
from dmpo_trl.envs.trajectory import Trajectory, run_actions


__all__ = ["load_experts", "load_rollouts", "save_rollouts"]


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_rollouts(rollouts: list[Rollout], path: Path) -> None:
    _write_jsonl(
        [
            {
                "variation": r.variation,
                "sample": r.sample,
                "actions": r.actions,
                "replies": r.replies,
                "observations": [s.observation for s in r.steps],
                "scores": [s.score for s in r.steps],
                "valid": [s.valid for s in r.steps],
                "success": r.success,
                "score": r.final_score,
                "truncated": r.truncated,
            }
            for r in rollouts
        ],
        path,
    )


def load_rollouts(env: AgentEnv, path: Path) -> list[Rollout]:
    """Read rollouts back by replaying their actions from reset; raises `DMPOEnvError` if an observation differs."""
    rollouts = []
    for rec in _read_jsonl(path):
        start = env.reset(rec["variation"])
        r = Rollout(start=start, variation=rec["variation"], sample=rec["sample"], replies=rec["replies"])
        r.truncated = rec["truncated"]
        for action, recorded in zip(rec["actions"], rec["observations"], strict=True):
            step = env.step(action)
            if not env.same_observation(step.observation, recorded):
                raise DMPOEnvError(f"{path}: variation {rec['variation']} does not replay at action {action!r}")
            r.add(action, step)
        rollouts.append(r)
    return rollouts


def load_experts(env: AgentEnv, path: Path, split: str) -> dict[int, Trajectory]:
    """The stored expert trajectories of one split, replayed from reset (each must still solve its task)."""

    experts = {}
    for rec in _read_jsonl(path):
        if rec["split"] != split:
            continue
        traj = run_actions(env, rec["variation"], rec["actions"])
        if not traj.success or traj.num_turns != len(rec["actions"]):
            raise DMPOEnvError(
                f"{path}: the stored expert trajectory of variation {rec['variation']} no longer solves it"
            )
        experts[int(rec["variation"])] = traj
    return experts
