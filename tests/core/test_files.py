"""`dmpo_trl.core.files`: safe names, removal only inside a root, atomic writes, tolerant record reads, the output lock."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from dmpo_trl.core.files import (
    LOCK_FILE,
    OutputLock,
    OutputLockedError,
    UnsafePathError,
    atomic_write_json,
    atomic_write_text,
    check_name,
    read_json_record,
    remove_tree,
)


@pytest.mark.parametrize("name", ["dmpo-0.7", "noisy", "seed0", "a_b+c=d", "0"])
def test_check_name_accepts_plain_names(name):
    assert check_name(name, "method name") == name


@pytest.mark.parametrize("name", ["../x", "dmpo-0.7/../../victim", "/abs", ".hidden", "..", "", "a b", "a\\b"])
def test_check_name_refuses_path_like_names(name):
    with pytest.raises(UnsafePathError, match="method name"):
        check_name(name, "method name")


def test_remove_tree_only_inside_root(tmp_path):
    root, victim = tmp_path / "out", tmp_path / "victim"
    (root / "stage").mkdir(parents=True)
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    with pytest.raises(UnsafePathError, match="not inside"):
        remove_tree(root / ".." / "victim", root)
    with pytest.raises(UnsafePathError, match="not inside"):
        remove_tree(root, root)  # the root itself is not a stage folder
    (root / "link").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        remove_tree(root / "link", root)  # resolves outside
    assert (victim / "keep.txt").read_text() == "mine"
    remove_tree(root / "stage", root)
    assert not (root / "stage").exists()


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "stage.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, json.dumps({"a": 2, "long": "x" * 10_000}))
    assert json.loads(path.read_text()) == {"a": 1}  # the old record, whole
    assert [p.name for p in tmp_path.iterdir()] == ["stage.json"]  # no temporary file left


def test_read_json_record_warns_and_returns_none_on_a_cut_file(tmp_path, caplog):
    path = tmp_path / "stage.json"
    path.write_text('{"key": {"a": 1,\n  ')
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.core.files"):
        assert read_json_record(path, "stage record") is None
    assert str(path) in caplog.text and "not finished" in caplog.text
    path.write_text("[1, 2]")
    assert read_json_record(path) is None
    assert read_json_record(tmp_path / "absent.json") is None
    path.write_text('{"a": 1}')
    assert read_json_record(path) == {"a": 1}


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "command": "dmpo-trl train", "started": "now"}
    (folder / LOCK_FILE).write_text(json.dumps(holder))


def test_lock_refuses_a_second_run_naming_the_first(tmp_path):
    other = _sleeper()
    try:
        _write_lock(tmp_path / "out", other.pid)
        with pytest.raises(OutputLockedError, match=f"process {other.pid} on {socket.gethostname()}"):
            OutputLock(tmp_path / "out", "training").acquire()
    finally:
        other.kill()
        other.wait()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    _write_lock(tmp_path / "out", 1, host="some-other-node")
    with pytest.raises(OutputLockedError, match="some-other-node"):
        OutputLock(tmp_path / "out").acquire()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path / "out", dead.pid)
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.core.files"):
        with OutputLock(tmp_path / "out") as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"process {dead.pid}" in caplog.text
    assert not (tmp_path / "out" / LOCK_FILE).exists()  # released


def test_lock_is_exclusive_between_processes(tmp_path):
    code = (
        "import sys, time; from dmpo_trl.core.files import OutputLock; "
        f"lock = OutputLock({str(tmp_path / 'out')!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=f"process {holder.pid}"):
            OutputLock(tmp_path / "out").acquire()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(tmp_path / "out"):  # its process is gone: the lock is stale now
        pass
