"""`dmpo-trl train` on disk: one run per output folder, no token in saved files, a full disk named, and resume past
a checkpoint whose save was cut."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest

from dmpo_trl.cli.train import parse_args, run
from dmpo_trl.core.files import LOCK_FILE, OutputLockedError
from tests.cli.helpers import base_recipe, write_recipe


def _args(tmp_path, ws, **overrides):
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(ws, output_dir=str(tmp_path / "run"), **overrides))
    return parse_args(["--config", str(recipe)])


def test_hub_token_is_never_written_to_disk(ws, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    secret = "hf_NotARealTokenButSecret1234"
    script_args, training_args, model_args = _args(
        tmp_path, ws, max_steps=2, save_strategy="steps", save_steps=1, hub_token=secret
    )
    assert training_args.hub_token is None and os.environ["HF_TOKEN"] == secret  # where the Hub client reads it
    run(script_args, training_args, model_args)
    saved = list((tmp_path / "run").rglob("*"))
    assert any(p.name == "training_args.bin" for p in saved)
    assert {p.parent.name for p in saved if p.name == "training_args.bin"} >= {"run", "checkpoint-1", "checkpoint-2"}
    for path in saved:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_second_training_on_the_same_output_dir_fails_at_once(ws, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"pid": other.pid, "host": socket.gethostname(), "command": "dmpo-trl train", "started": "now"}
        (out / LOCK_FILE).write_text(json.dumps(holder))
        with pytest.raises(
            OutputLockedError, match=f"another training: process {other.pid} on {socket.gethostname()}"
        ):
            run(*_args(tmp_path, ws, max_steps=1))
    finally:
        other.kill()
        other.wait()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written by the refused run
    run(*_args(tmp_path, ws, max_steps=1))  # the holder is gone: its lock is taken over, then released
    assert not (out / LOCK_FILE).exists() and (out / "trainer_state.json").is_file()


def test_full_disk_during_a_checkpoint_is_named(ws, tmp_path, monkeypatch):
    from transformers import Trainer

    def short_write(self, output_dir):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1536 vs 1447")

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", short_write)
    with pytest.raises(
        OSError, match=r"no space left on the device while saving the checkpoint to .*run/checkpoint-1 "
    ):
        run(*_args(tmp_path, ws, max_steps=2, save_strategy="steps", save_steps=1))


def test_resume_skips_a_checkpoint_cut_by_a_full_disk(ws, tmp_path, caplog):
    run(*_args(tmp_path, ws, max_steps=2, save_strategy="steps", save_steps=1))
    out = tmp_path / "run"
    shutil.rmtree(out / "checkpoint-2")
    (out / "checkpoint-3").mkdir()  # a later save cut before its trainer_state.json
    (out / "checkpoint-3" / "model.safetensors").write_bytes(b"\0" * 10)
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.core.checkpoints"):
        trainer = run(
            *_args(tmp_path, ws, max_steps=2, save_strategy="steps", save_steps=1, resume_from_checkpoint="true")
        )
    assert "checkpoint-3 is incomplete" in caplog.text
    assert trainer.state.global_step == 2
    steps = [h["step"] for h in trainer.state.log_history if "loss" in h]
    assert steps == [1, 2]  # step 1 from checkpoint-1's history, step 2 trained after resuming from it
