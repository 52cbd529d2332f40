"""Helpers for the launch tests: a tiny on-disk checkpoint + data, and offline child processes.

The model, tokenizer and rows come from `dmpo_trl.testing` (tiny Llama, byte-level BPE with the real Qwen2.5 chat
template, ETO-shaped multi-turn pairs); this module writes them to disk, builds recipes, and runs `dmpo_trl.cli.train`
in child processes (plain, or under `accelerate launch` with the shipped configs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from dmpo_trl.data.io import write_records
from dmpo_trl.testing import dataset_rows, make_tokenizer, save_tiny_model


REPO_ROOT = Path(__file__).resolve().parents[2]


def make_workspace(root: Path, n_rows: int = 16, seed: int = 0) -> dict[str, Path]:
    """Tiny safetensors checkpoint (`model/`) and a JSONL of `n_rows` multi-turn pairs (`train.jsonl`) under root."""
    model_dir = root / "model"
    save_tiny_model(model_dir, make_tokenizer("qwen2_5"), seed=seed)
    data = root / "train.jsonl"
    write_records(dataset_rows(n_rows, seed=seed), data)
    return {"model": model_dir, "data": data, "root": root}


def base_recipe(ws: dict[str, Path], **overrides) -> dict:
    """A CPU recipe for the tiny model: fp32, 4 optimizer steps, no checkpoints, log every step."""
    recipe = {
        "model_name_or_path": str(ws["model"]),
        "data_files": [str(ws["data"])],
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 4,
        "learning_rate": 1.0e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "max_length": 256,
        "beta": 0.1,
        "gamma": 0.7,
        "seed": 0,
        "bf16": False,
        "use_cpu": True,
        "dataset_num_proc": None,
    }
    recipe.update(overrides)
    return {k: v for k, v in recipe.items() if v is not None}


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def free_port() -> int:
    """A TCP port nothing listens on right now (so parallel test runs do not collide on 29500)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Offline, single-threaded, source-tree-first environment for child processes."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        WANDB_DISABLED="true",
        CI="1",
    )
    env.update(extra)
    return env


def run_checked(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `cmd` offline; fail with the tail of its output when it exits non-zero."""
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-12000:]}"
        )
    return proc


def train_cmd(recipe: Path, *flags: str) -> list[str]:
    """`python -m dmpo_trl.cli.train --config recipe [flags]` (one process)."""
    return [sys.executable, "-m", "dmpo_trl.cli.train", "--config", str(recipe), *flags]


def cli_cmd(*args: str) -> list[str]:
    """`dmpo-trl ARGS` through this interpreter."""
    return [sys.executable, "-m", "dmpo_trl.cli", *args]


def logged_losses(output_dir: Path) -> list[float]:
    """Per-step training losses from `trainer_state.json` (written by `dmpo_trl.cli.train` next to the final model)."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


#: Recipe flags of a small LoRA run on the tiny model.
LORA = [
    "--use_peft",
    "true",
    "--lora_r",
    "4",
    "--lora_alpha",
    "8",
    "--lora_dropout",
    "0.0",
    "--lora_target_modules",
    "q_proj",
    "v_proj",
    "--learning_rate",
    "1e-2",
]
