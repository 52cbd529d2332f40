"""Compare two finished runs: per-step training losses and final weights.

    python -m dmpo_trl.cli.compare outputs/run-1gpu outputs/run-8gpu [--loss-tol 1e-4] [--weight-tol 1e-4]

Use it to check a new launch set-up (more GPUs, ZeRO stage, FSDP, a resumed run) against a reference run with the
same recipe and global batch. Reads `trainer_state.json` (written by `dmpo_trl.cli.train` next to the final model) and
`model.safetensors` or `adapter_model.safetensors`. Exit code 1 when a tolerance is exceeded.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunDifference:
    """How far run B is from run A."""

    steps: int
    max_loss_diff: float
    max_weight_diff: float
    tensors: int


def read_losses(run_dir: Path) -> list[float]:
    """Per-step training losses logged in `run_dir/trainer_state.json`."""
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def read_weights(run_dir: Path) -> dict:
    """The saved tensors (adapter for LoRA runs, full model otherwise; single-file checkpoints)."""
    from safetensors.torch import load_file

    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (run_dir / name).is_file():
            return load_file(str(run_dir / name))
    raise FileNotFoundError(f"{run_dir} has neither adapter_model.safetensors nor model.safetensors")


def compare_runs(a: Path, b: Path) -> RunDifference:
    """Largest absolute per-step loss difference and per-element weight difference between two runs.

    Raises:
        ValueError: the runs logged a different number of steps or saved different tensors.
    """
    la, lb = read_losses(a), read_losses(b)
    if len(la) != len(lb):
        raise ValueError(f"{a} logged {len(la)} losses, {b} logged {len(lb)}")
    wa, wb = read_weights(a), read_weights(b)
    if wa.keys() != wb.keys():
        raise ValueError(f"the runs saved different tensors: {sorted(set(wa) ^ set(wb))[:5]}")
    return RunDifference(
        steps=len(la),
        max_loss_diff=max((abs(x - y) for x, y in zip(la, lb, strict=True)), default=0.0),
        max_weight_diff=max(((wa[k].float() - wb[k].float()).abs().max().item() for k in wa), default=0.0),
        tensors=len(wa),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--loss-tol", type=float, default=1e-4)
    parser.add_argument("--weight-tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    diff = compare_runs(args.run_a, args.run_b)
    print(
        f"steps: {diff.steps}  max |loss diff|: {diff.max_loss_diff:.3g}  "
        f"max |weight diff|: {diff.max_weight_diff:.3g} over {diff.tensors} tensors"
    )
    return int(diff.max_loss_diff > args.loss_tol or diff.max_weight_diff > args.weight_tol)


if __name__ == "__main__":
    raise SystemExit(main())
