"""Real multi-process runs of the tiny model on CPU: DDP (gloo), ZeRO-2/3, FSDP, two "nodes", kill + resume.

Every run is a child process started the way a user starts it (`dmpo-trl train --accelerate-config NAME ...`, the
SLURM per-node script, `python -m dmpo_trl.cli.train`) with the shipped accelerate configs unchanged: on a machine without
GPUs accelerate and DeepSpeed fall back to CPU and gloo, and the recipe says `use_cpu: true`. Losses come from
`trainer_state.json`, weights from the saved safetensors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dmpo_trl.cli.compare import compare_runs
from tests.cli.helpers import (
    LORA,
    REPO_ROOT,
    base_recipe,
    cli_cmd,
    free_port,
    logged_losses,
    make_workspace,
    run_checked,
    subprocess_env,
    train_cmd,
    write_recipe,
)


# fp32 on CPU: different reduction orders (all-reduce, ZeRO partitions) move results by ~1e-6.
LOSS_TOL = 1e-5
WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    ws = make_workspace(root, n_rows=16)
    ws["recipe"] = write_recipe(root / "recipe.yaml", base_recipe(ws))
    return ws


def _weights(output_dir: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (output_dir / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(output_dir / name))


def _assert_same_run(a: Path, b: Path) -> None:
    diff = compare_runs(a, b)
    assert diff.steps == 4
    assert diff.max_loss_diff < LOSS_TOL, f"losses differ by {diff.max_loss_diff}"
    assert diff.max_weight_diff < WEIGHT_ATOL, f"weights differ by {diff.max_weight_diff}"


def _one_process(ws, name: str, *flags: str) -> Path:
    """Reference: one process, per-device batch 4 (= the global batch of the 2-process runs)."""
    out = ws["root"] / name
    if not (out / "trainer_state.json").exists():
        run_checked(train_cmd(ws["recipe"], "--output_dir", str(out), *flags), cwd=REPO_ROOT)
    return out


def _two_processes(ws, config: str, name: str, *flags: str, per_device: int = 2) -> Path:
    out = ws["root"] / name
    launch = ["--accelerate-config", config, "--num-processes", "2", "--main-process-port", str(free_port())]
    run_checked(
        cli_cmd(
            "train",
            *launch,
            "--config",
            str(ws["recipe"]),
            "--output_dir",
            str(out),
            "--per_device_train_batch_size",
            str(per_device),
            *flags,
        ),
        cwd=REPO_ROOT,
    )
    return out


def test_ddp_two_processes_equal_one_process(ws):
    single = _one_process(ws, "single")
    losses = logged_losses(single)
    assert losses[0] == pytest.approx(0.693147, abs=1e-5) and losses[-1] < losses[0]  # it trains
    trained, initial = _weights(single), load_file(str(ws["model"] / "model.safetensors"))
    moved = max((trained[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3
    _assert_same_run(single, _two_processes(ws, "ddp", "ddp"))


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2", "zero3", "fsdp"])
def test_sharded_full_reference_matches_one_process(ws, config):
    """DeepSpeed ZeRO-2 / ZeRO-3 and FSDP2 with a full reference model (sharded too under ZeRO-3 and FSDP)."""
    _assert_same_run(_one_process(ws, "single"), _two_processes(ws, config, config))


@pytest.mark.slow
def test_deepspeed_zero3_gradient_accumulation_matches_one_process(ws):
    """The paper recipes' shape: per-device batch x accumulation x GPUs (here 1 x 2 x 2 = 4 = one process's batch)."""
    out = _two_processes(ws, "zero3", "zero3_accum", "--gradient_accumulation_steps", "2", per_device=1)
    _assert_same_run(_one_process(ws, "single"), out)


@pytest.mark.slow
def test_deepspeed_zero3_lora_matches_one_process(ws):
    _assert_same_run(_one_process(ws, "single_lora", *LORA), _two_processes(ws, "zero3", "zero3_lora", *LORA))


@pytest.mark.slow
def test_two_nodes_via_slurm_node_script(ws):
    """Two `accelerate launch` calls (machine ranks 0 and 1, one process each) rendezvous on localhost."""
    out = ws["root"] / "two_nodes"
    env = subprocess_env(
        DMPO_RECIPE=str(ws["recipe"]),
        DMPO_ACCELERATE_CONFIG="ddp",
        GPUS_PER_NODE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        SLURM_NNODES="2",
        PYTHON=sys.executable,
    )
    flags = ["--output_dir", str(out), "--per_device_train_batch_size", "2"]
    nodes = [
        subprocess.Popen(
            ["bash", "scripts/slurm/launch_node.sh", *flags],
            cwd=REPO_ROOT,
            env={**env, "SLURM_PROCID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    _assert_same_run(_one_process(ws, "single"), out)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from dmpo_trl.cli.train import main

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == int(os.environ["KILL_AT_STEP"]):
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like a pre-empted node

    sys.exit(main(sys.argv[1:], callbacks=[KillAfterCheckpoint()]))
""")


def test_killed_run_resumed_from_checkpoint_equals_uninterrupted(ws):
    """8 steps (2 epochs of 4 batches, linear decay, shuffled data); SIGKILL right after the step-5 checkpoint."""
    flags = ["--max_steps", "8", "--lr_scheduler_type", "linear", "--save_strategy", "steps", "--save_steps", "1"]
    full, interrupted = ws["root"] / "uninterrupted", ws["root"] / "interrupted"
    run_checked(train_cmd(ws["recipe"], "--output_dir", str(full), *flags), cwd=REPO_ROOT)

    killer = ws["root"] / "kill_after_checkpoint.py"
    killer.write_text(KILLER)
    proc = subprocess.run(
        [sys.executable, str(killer), "--config", str(ws["recipe"]), "--output_dir", str(interrupted), *flags],
        cwd=REPO_ROOT,
        env=subprocess_env(KILL_AT_STEP="5"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (interrupted / "trainer_state.json").exists()  # died before the end
    assert (interrupted / "checkpoint-5").is_dir() and not (interrupted / "checkpoint-6").exists()

    run_checked(
        train_cmd(ws["recipe"], "--output_dir", str(interrupted), *flags, "--resume_from_checkpoint", "auto"),
        cwd=REPO_ROOT,
    )
    expected, resumed = logged_losses(full), logged_losses(interrupted)
    assert len(expected) == 8 and len(set(expected)) == 8
    assert resumed == pytest.approx(expected, rel=1e-6, abs=1e-7)
    wa, wb = _weights(full), _weights(interrupted)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed weights differ from the uninterrupted run"
