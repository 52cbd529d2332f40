"""`dmpo_trl.core.checkpoints`: the last complete checkpoint, a full disk named, the Hub token kept off disk."""

from __future__ import annotations

import errno
import logging
import os
from types import SimpleNamespace

import pytest

from dmpo_trl.core.checkpoints import explain_save_errors, last_complete_checkpoint, move_hub_token_to_env


def test_last_complete_checkpoint_skips_cut_ones(tmp_path, caplog):
    for step, state in ((2, "{}"), (10, "{}"), (12, '{"global_step": 1'), (14, None)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-99.tmp").mkdir()  # not a checkpoint name
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # by step, not by name
    assert "checkpoint-14 is incomplete" in caplog.text and "checkpoint-12 is incomplete" in caplog.text
    assert last_complete_checkpoint(tmp_path / "absent") is None


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
    ],
)
def test_a_full_disk_is_named_with_the_folder(tmp_path, error):
    with pytest.raises(OSError, match=f"no space left on the device while saving the checkpoint to {tmp_path}/c"):
        with explain_save_errors(tmp_path / "c"):
            raise error


def test_other_save_errors_pass_unchanged(tmp_path):
    with pytest.raises(RuntimeError, match="CUDA error"):
        with explain_save_errors(tmp_path):
            raise RuntimeError("CUDA error: device-side assert")


def test_hub_token_moves_to_the_environment(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = SimpleNamespace(hub_token="hf_x")
    move_hub_token_to_env(args)
    assert args.hub_token is None and os.environ["HF_TOKEN"] == "hf_x"
    move_hub_token_to_env(args)  # nothing to move: the environment stays
    assert os.environ["HF_TOKEN"] == "hf_x"
