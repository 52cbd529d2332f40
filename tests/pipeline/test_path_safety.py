"""The pipeline never creates or removes a folder outside its output_dir, reruns a stage whose record a crash cut,
and refuses a second run on the same output_dir."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from dmpo_trl.core.files import LOCK_FILE, OutputLockedError, UnsafePathError
from dmpo_trl.pipeline.cache import STAGE_FILE, StageRunner
from dmpo_trl.pipeline.config import config_from_dict
from dmpo_trl.pipeline.runner import run_pipeline


def work(folder, value):
    (folder / "out.txt").write_text(str(value))
    return {"value": value}


@pytest.mark.parametrize(
    "methods, settings, seeds",
    [
        ([{"name": "dmpo-0.7/../../../../victim/x"}], ["noisy"], [0]),
        ([{"name": ".."}], ["noisy"], [0]),
        ([{"name": "dmpo"}], ["noisy"], ["0/../x"]),
        ([{"name": "dmpo"}], ["noisy"], [True]),
    ],
)
def test_recipe_names_that_are_not_folder_names_are_refused(methods, settings, seeds):
    with pytest.raises((UnsafePathError, ValueError), match="method name|seeds must be integers"):
        config_from_dict({"methods": methods, "settings": settings, "seeds": seeds})


def test_stage_runner_never_touches_a_folder_outside_its_root(tmp_path):
    victim = tmp_path / "victim" / "x"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("mine")
    runner = StageRunner(tmp_path / "out", verbose=False)
    for name in ("seed0/r1/noisy-dmpo-0.7/../../../../victim/x/train", "../victim/x", "/abs/path"):
        with pytest.raises(UnsafePathError):
            runner.run(name, {"k": 1}, work, 1)
    assert (victim / "precious.txt").read_text() == "mine"
    assert runner.run("seed0/r1/noisy-dmpo-0.7/train", {"k": 1}, work, 1)["result"] == {"value": 1}


def test_a_cut_stage_record_means_not_finished(tmp_path, caplog):
    runner = StageRunner(tmp_path, verbose=False)
    runner.run("explore", {"k": 1}, work, 1)
    record = tmp_path / "explore" / STAGE_FILE
    text = record.read_text()
    record.write_text(text[: len(text) // 2])  # what a crash or a full disk leaves
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.core.files"):
        again = runner.run("explore", {"k": 1}, work, 2)
    assert not again["cached"] and again["result"] == {"value": 2}  # redone, no JSONDecodeError
    assert str(record) in caplog.text and "stage record of 'explore'" in caplog.text
    assert json.loads(record.read_text())["result"] == {"value": 2}


def test_a_second_pipeline_on_the_same_output_dir_fails_at_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"pid": other.pid, "host": socket.gethostname(), "command": "dmpo-trl pipeline", "started": "now"}
        (out / LOCK_FILE).write_text(json.dumps(holder))
        cfg = config_from_dict({"output_dir": str(out), "model": str(tmp_path / "no-model"), "progress": False})
        with pytest.raises(OutputLockedError, match=f"another pipeline run: process {other.pid}"):
            run_pipeline(cfg)  # refused before the model or the environment is looked at
    finally:
        other.kill()
        other.wait()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
