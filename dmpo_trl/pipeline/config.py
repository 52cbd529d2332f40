"""The pipeline's settings: one dataclass per stage, a recipe YAML file maps onto them one to one.

A recipe (see ``recipes/pipeline/``) is a YAML mapping with the top-level fields of `PipelineConfig` and one
mapping per stage (``sft``, ``explore``, ``train``, ``eval``), a list of ``methods`` and an optional ``quick``
mapping of overrides that ``--quick`` applies on top (same structure). Unknown keys are an error naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmpo_trl.core.weights import check_turn_weighting


__all__ = [
    "EvalSettings",
    "ExploreSettings",
    "Method",
    "PipelineConfig",
    "SFTSettings",
    "TrainSettings",
    "config_from_dict",
    "config_to_dict",
    "load_recipe",
    "resolve_bf16",
]


@dataclass
class SFTSettings:
    """SFT on expert (gold) trajectories of `episodes` training variations (TRL's SFTTrainer, action tokens only)."""

    episodes: int = 64
    epochs: float = 2.0
    learning_rate: float = 2e-3
    batch_size: int = 4
    lora_r: int = 16
    """LoRA rank; ``0``: full fine-tuning."""
    lora_alpha: int = 32
    lora_last_layers: int | None = 4
    """LoRA on the top N decoder layers (``null``: all layers)."""
    max_length: int = 1024


@dataclass
class ExploreSettings:
    """Sampled rollouts of the current policy on `episodes` of the SFT variations (the authors explore the tasks
    they trained SFT on), paired with the expert trajectories by ETO's rule."""

    episodes: int = 32
    num_rollouts: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_steps: int = 12
    max_new_tokens: int = 16
    batch_size: int = 32
    max_extra_rejected_turns: int | None = 5
    """ETO's cap on a losing rollout: at most the expert's number of actions plus this many (``null``: no cap)."""
    clean_max_extra_rejected_turns: int | None = 5
    """The same cap in the clean setting. Where an SFT policy's failures end in invalid actions once it has made its
    mistake (TextWorld-Express ``twc``: a misplaced item cannot be taken back), ``0`` keeps the valid start of those
    rollouts, up to the expert's length, as clean losing trajectories; the rollout's final score is the pair's
    rejected reward either way."""

    def cap_for(self, setting: str) -> int | None:
        """The cap of `setting` (``"noisy"`` or ``"clean"``)."""
        return self.clean_max_extra_rejected_turns if setting == "clean" else self.max_extra_rejected_turns


@dataclass
class TrainSettings:
    """Preference training (DMPOTrainer, LoRA) of the SFT model on the explored pairs; the reference is the SFT
    model (adapter disabled)."""

    epochs: float = 1.0
    max_pairs: int | None = None
    """Train on at most this many pairs (a seeded sample), the same number for every method of a setting."""
    learning_rate: float = 5e-4
    beta: float = 0.1
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    lora_r: int = 16
    """LoRA rank; ``0``: full fine-tuning (the reference is then a frozen copy of the starting model)."""
    lora_alpha: int = 32
    lora_last_layers: int | None = 4
    max_length: int = 1024
    sft_weight: float = 0.0
    """Weight of an NLL term on the chosen actions (``loss_type=["sigmoid", "sft"]``); 0 = the plain objective."""


@dataclass
class Method:
    """One preference-training method: `turn_weighting` ``"dmpo"`` (with `gamma`) or ``"uniform"`` (multi-turn DPO)."""

    name: str
    turn_weighting: str = "dmpo"
    gamma: float = 0.7


@dataclass
class EvalSettings:
    """Greedy rollouts on `episodes` held-out variations of the environment's `split` split."""

    episodes: int = 50
    split: str = "test"
    max_steps: int = 12
    max_new_tokens: int = 16
    batch_size: int = 50
    base_model: bool = True
    """Also evaluate the untouched model (before SFT)."""
    min_gold_steps: int = 1
    """Draw the held-out variations among those whose shortest gold path (of `stages.GOLD_DRAWS` draws) has at least
    this many actions."""


@dataclass
class PipelineConfig:
    """SFT -> explore -> pairs -> DMPO / multi-turn DPO -> evaluate, over seeds, settings and methods."""

    output_dir: str = "runs/pipeline"
    model: str | None = None
    """Model folder, Hub id or ``None``/``"default"`` (the embedded SmolLM2-135M-Instruct)."""
    env: str = "textworld-express"
    task: str = "coin"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `make_env` (``game_params`` for TextWorld-Express, ``simplifications`` for ScienceWorld)."""
    seed: int = 0
    """Seed of the SFT stage and of the choice of variations."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of explore + preference training (each seed: its own rollouts, pairs and training runs)."""
    settings: list[str] = field(default_factory=lambda: ["noisy"])
    methods: list[Method] = field(default_factory=lambda: [Method("dmpo-0.7", "dmpo", 0.7)])
    rounds: int = 1
    """Explore -> train iterations (round 2 explores with the round-1 model and trains it further)."""
    length_buckets: list[int] = field(default_factory=lambda: [2, 4, 6])
    """Upper bounds of the gold-path-length buckets of the Fig. 4 analysis (a last bucket takes the rest)."""
    sft: SFTSettings = field(default_factory=SFTSettings)
    explore: ExploreSettings = field(default_factory=ExploreSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    bf16: bool | None = None
    """bfloat16 autocast for training and rollouts (weights stay float32). ``None``: on when the device computes
    bf16 natively (a CUDA GPU with bf16, a CPU with AVX512-BF16/AMX: 2.5x faster training on this project's CPU)."""
    progress: bool = True

    def __post_init__(self):
        from dmpo_trl.envs.pairs import SETTINGS

        bad = [s for s in self.settings if s not in SETTINGS]
        if bad or not self.settings:
            raise ValueError(f"settings must be a non-empty list of {SETTINGS}, got {self.settings}")
        names = [m.name for m in self.methods]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"methods need distinct names, got {names}")
        for m in self.methods:
            try:
                check_turn_weighting(m.turn_weighting)
            except ValueError as err:
                raise ValueError(f"method {m.name}: {err}") from None
        if self.rounds < 1 or not self.seeds:
            raise ValueError("rounds must be >= 1 and seeds non-empty")
        check_path_names(self)


def check_path_names(cfg: PipelineConfig) -> None:
    """Refuse a method name, setting or seed that cannot name a stage folder (`dmpo_trl.core.files.check_name`)."""
    from dmpo_trl.core.files import check_name

    for m in cfg.methods:
        check_name(m.name, "method name")
    for s in cfg.settings:
        check_name(s, "setting")
    for seed in cfg.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seeds must be integers, got {seed!r}")


_NESTED = {"sft": SFTSettings, "explore": ExploreSettings, "train": TrainSettings, "eval": EvalSettings}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _build(cls, values: dict[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def config_from_dict(values: dict[str, Any], *, quick: bool = False, where: str = "recipe") -> PipelineConfig:
    """A `PipelineConfig` from a recipe mapping (``quick`` applies its ``quick`` overrides)."""
    values = dict(values)
    overrides = values.pop("quick", None) or {}
    if quick:
        values = _merge(values, overrides)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in _NESTED:
            kwargs[key] = _build(_NESTED[key], dict(value or {}), f"{where}: {key}")
        elif key == "methods":
            kwargs[key] = [_build(Method, dict(m), f"{where}: methods[{i}]") for i, m in enumerate(value)]
        else:
            kwargs[key] = value
    return _build(PipelineConfig, kwargs, where)


def load_recipe(path: str | Path, *, quick: bool = False, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read a pipeline recipe (YAML); `overrides` (same structure) win over the file."""
    import yaml

    values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a pipeline recipe must be a YAML mapping")
    quick_values = values.pop("quick", None) or {}
    if quick:
        values = _merge(values, quick_values)
    if overrides:
        values = _merge(values, overrides)
    return config_from_dict(values, where=str(path))


def config_to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """The settings as plain data (for stage keys and the report)."""
    return dataclasses.asdict(cfg)


def resolve_bf16(setting: bool | None) -> bool:
    """`PipelineConfig.bf16` resolved: an explicit value, else whether this device computes bf16 natively."""
    if setting is not None:
        return bool(setting)
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:  # oneDNN's check for native bf16 (AVX512-BF16 or AMX)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
