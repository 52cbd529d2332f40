"""Find the shipped accelerate configs by short name and build `accelerate launch` command lines.

The configs ship inside the package, in `dmpo_trl/cli/accelerate_configs/<name>.yaml` (ddp, zero2, zero3, fsdp), so a
short name works from any installation, in or outside a checkout. None of them fixes `num_processes`: pass
`--num_processes` (`dmpo-trl train` fills it in with the number of visible GPUs when you do not).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


#: Where the shipped accelerate configs live (package data).
ACCELERATE_CONFIGS_DIR = Path(__file__).resolve().parent / "accelerate_configs"
#: The module every process runs under `accelerate launch`: the one training entry point.
TRAIN_MODULE = "dmpo_trl.cli.train"


def available_accelerate_configs(directory: Path = ACCELERATE_CONFIGS_DIR) -> list[str]:
    """Short names of the shipped accelerate configs (file stems in `dmpo_trl/cli/accelerate_configs/`)."""
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_accelerate_config(name_or_path: str, directory: Path = ACCELERATE_CONFIGS_DIR) -> Path:
    """Turn `zero3` (a short name) or a path to a YAML file into the path of an existing accelerate config.

    Raises:
        FileNotFoundError: neither an existing file nor a shipped config name; the message lists the shipped names.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    stem = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    shipped = directory / f"{stem}.yaml"
    if os.sep not in name_or_path and shipped.is_file():
        return shipped
    names = ", ".join(available_accelerate_configs(directory)) or f"none found in {directory}"
    raise FileNotFoundError(
        f"accelerate config {name_or_path!r} is neither a file nor a shipped config name (shipped: {names})."
    )


@dataclass
class LaunchTopology:
    """Process layout for one `accelerate launch` call (one call per node).

    Attributes:
        num_processes: total processes over all machines (GPUs per node x nodes).
        num_machines: number of nodes.
        machine_rank: rank of this node, 0..num_machines-1.
        main_process_ip: address of the rank-0 node (multi-node only).
        main_process_port: port on the rank-0 node (multi-node only).
        mixed_precision: override of the config's `mixed_precision` ("no", "bf16", "fp16"), or None to keep it.
    """

    num_processes: int
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    mixed_precision: str | None = None

    def __post_init__(self) -> None:
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}.")
        if self.num_machines < 1 or not 0 <= self.machine_rank < self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} is outside 0..{self.num_machines - 1}.")
        if self.num_machines > 1 and self.main_process_ip is None:
            raise ValueError("a multi-node launch needs main_process_ip (the address of the machine_rank 0 node).")


def default_num_processes() -> int:
    """Number of visible CUDA devices, or 1 when there is none (CPU)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return 1
    return max(torch.cuda.device_count(), 1) if torch.cuda.is_available() else 1


def build_accelerate_command(config_file: Path, topology: LaunchTopology, train_args: list[str]) -> list[str]:
    """The argv of `accelerate launch --config_file CONFIG ... -m dmpo_trl.cli.train TRAIN_ARGS` for this interpreter."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    cmd += ["--num_processes", str(topology.num_processes), "--num_machines", str(topology.num_machines)]
    cmd += ["--machine_rank", str(topology.machine_rank)]
    if topology.main_process_ip is not None:
        cmd += ["--main_process_ip", topology.main_process_ip]
    if topology.main_process_port is not None:
        cmd += ["--main_process_port", str(topology.main_process_port)]
    if topology.mixed_precision is not None:
        cmd += ["--mixed_precision", topology.mixed_precision]
    return [*cmd, "-m", TRAIN_MODULE, *train_args]
