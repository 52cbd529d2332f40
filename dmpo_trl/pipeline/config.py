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

from dmpo_trl.core.files import check_name
from dmpo_trl.core.weights import check_turn_weighting
from dmpo_trl.data.io import read_yaml_mapping
from dmpo_trl.envs.pairs import SETTINGS


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
    """Rollouts of the current policy on `episodes` training variations, paired with the expert trajectories by
    ETO's rule. The default is the authors' (and ETO's): one greedy rollout per game."""

    episodes: int = 32
    games: str = "sft"
    """Which training games are explored: ``"sft"`` (the first `episodes` of the SFT games, as the authors do) or
    ``"disjoint"`` (`episodes` training games SFT did not see, so the SFT model fails on them more like on new
    games)."""
    num_rollouts: int = 1
    """Rollouts per game (must be 1 when `temperature` is 0: greedy rollouts of a game are all the same)."""
    temperature: float = 0.0
    """0: greedy (the authors, ETO); > 0: sampling at that temperature."""
    top_p: float = 1.0
    max_steps: int = 12
    max_new_tokens: int = 16
    batch_size: int = 32
    max_extra_rejected_turns: int | None = 5
    """ETO's cap on a losing rollout: at most the expert's number of actions plus this many (``null``: no cap)."""
    clean_max_extra_rejected_turns: int | None = 5
    """The same cap in the clean setting, applied after the losing side is cut before its first invalid or repeated
    action (`dmpo_trl.envs.explore`); the rollout's final score is the pair's rejected reward either way."""

    def __post_init__(self):
        if self.games not in ("sft", "disjoint"):
            raise ValueError(f"explore.games must be 'sft' or 'disjoint', got {self.games!r}")
        if self.temperature == 0 and self.num_rollouts != 1:
            raise ValueError(
                f"explore.num_rollouts must be 1 with explore.temperature 0 (greedy), got {self.num_rollouts}"
            )

    def cap_for(self, setting: str) -> int | None:
        """The cap of `setting` (``"noisy"`` or ``"clean"``)."""
        return self.clean_max_extra_rejected_turns if setting == "clean" else self.max_extra_rejected_turns


@dataclass
class TrainSettings:
    """Preference training (DMPOTrainer, LoRA) of the SFT model on the explored pairs; the reference is the SFT
    model (adapter disabled). Effective batch: `batch_size` x `gradient_accumulation_steps` pairs."""

    epochs: float = 2.0
    max_pairs: int | None = None
    """Train on at most this many pairs (a seeded sample), the same for every method of a setting; ``null``: all."""
    learning_rate: float = 5e-4
    """The default learning rate; a method's own `learning_rate` overrides it."""
    warmup_ratio: float = 0.1
    """Share of the optimizer steps with a linear warmup (0: none)."""
    lr_scheduler_type: str = "cosine"
    beta: float = 0.1
    batch_size: int = 1
    gradient_accumulation_steps: int = 8
    lora_r: int = 16
    """LoRA rank; ``0``: full fine-tuning (the reference is then a frozen copy of the starting model)."""
    lora_alpha: int = 32
    lora_last_layers: int | None = 4
    max_length: int = 1024
    sft_weight: float = 0.0
    """Weight of an NLL term on the chosen actions (``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, w]``); 0 =
    the paper's objective. A method's own `sft_weight` overrides it."""

    def __post_init__(self):
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")


@dataclass
class Method:
    """One preference-training method: `turn_weighting` ``"dmpo"`` (the derivation's phi, with `gamma`),
    ``"dmpo_eq16"`` (the paper's printed Eq. 16, with `gamma`) or ``"uniform"`` (multi-turn DPO)."""

    name: str
    turn_weighting: str = "dmpo"
    gamma: float = 0.7
    learning_rate: float | None = None
    """This method's learning rate (``null``: `train.learning_rate`): the methods' gradient scales differ (DMPO's
    sum of phi is 1-2, multi-turn DPO's sum of weights is T)."""
    settings: list[str] | None = None
    """The settings this method trains in (``null``: all of the recipe's): the paper's gamma differs by setting
    (small with noisy losing trajectories, large with clean ones)."""
    sft_weight: float | None = None
    """This method's NLL weight on the chosen actions (``null``: `train.sft_weight`). Above 0 it adds TRL's ``sft``
    loss type to ``sigmoid`` (``loss_weights [1, w]``): a departure from the paper, labelled so in the report."""

    def trains_in(self, setting: str) -> bool:
        return self.settings is None or setting in self.settings

    def lr(self, train: TrainSettings) -> float:
        return train.learning_rate if self.learning_rate is None else self.learning_rate

    def nll(self, train: TrainSettings) -> float:
        return train.sft_weight if self.sft_weight is None else self.sft_weight


@dataclass
class EvalSettings:
    """Greedy rollouts on `episodes` held-out variations of the environment's `split` split (and on
    `seen_episodes` training variations no stage used)."""

    episodes: int = 50
    split: str = "dev"
    """``dev`` for recipes that choose settings (``purpose: dev``); ``test`` only for the final report."""
    max_steps: int = 12
    max_new_tokens: int = 16
    batch_size: int = 50
    base_model: bool = True
    """Also evaluate the untouched model (before SFT)."""
    min_gold_steps: int = 1
    """Draw the held-out (and seen) variations among those whose shortest gold path (of `stages.GOLD_DRAWS` draws)
    has at least this many actions."""
    seen_episodes: int = 0
    """Also evaluate on this many training variations used by no stage (neither SFT nor explore): the "seen" set,
    whose items the models met in training."""


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
    expert_draws: int = 1
    """Each game's expert trajectory (SFT data, the chosen side of the pairs) is the shortest of this many gold
    draws; 1: the environment's gold path as drawn. TextWorld-Express's `coin` gold agent walks the rooms in a random
    order, back and forth (`move east`, `move west`, ... up to 25 actions in 4 rooms): 16 draws give the shortest."""
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
    purpose: str = "dev"
    """``dev``: a tuning recipe, refused when it evaluates on the ``test`` split; ``test``: the final report."""
    comparisons: list[str] = field(default_factory=list)
    """Pre-registered comparisons ``"A vs B"`` (A, B: ``sft``, ``base`` or ``<setting>/<method>``, ``r<k>/`` for a
    later round), printed in the report before the results, each with its paired interval and McNemar test."""

    def __post_init__(self):

        bad = [s for s in self.settings if s not in SETTINGS]
        if bad or not self.settings:
            raise ValueError(f"settings must be a non-empty list of {SETTINGS}, got {self.settings}")
        for m in self.methods:
            try:
                check_turn_weighting(m.turn_weighting)
            except ValueError as err:
                raise ValueError(f"method {m.name}: {err}") from None
            if m.settings is not None and not set(m.settings) <= set(self.settings):
                raise ValueError(f"method {m.name}: settings {m.settings} must be among the recipe's {self.settings}")
        for setting in self.settings:  # a name may repeat for methods of different settings
            names = [m.name for m in self.methods if m.settings is None or setting in m.settings]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"methods need distinct names within each setting, got {names} in {setting!r}")
        if self.expert_draws < 1:
            raise ValueError(f"expert_draws must be >= 1, got {self.expert_draws}")
        if self.rounds < 1 or not self.seeds:
            raise ValueError("rounds must be >= 1 and seeds non-empty")
        if self.purpose not in ("dev", "test"):
            raise ValueError(f"purpose must be 'dev' or 'test', got {self.purpose!r}")
        if self.purpose == "dev" and self.eval.split == "test":
            raise ValueError(
                "eval.split: a purpose: dev recipe chooses settings and must not evaluate on the test split "
                "(use eval.split: dev, or purpose: test for the final report)"
            )
        arms = {"sft", "base"} | {
            f"{prefix}{s}/{m.name}"
            for s in self.settings
            for m in self.methods
            if m.trains_in(s)
            for prefix in ["", *(f"r{r + 1}/" for r in range(self.rounds))]
        }
        for comparison in self.comparisons:
            sides = [side.strip() for side in str(comparison).split(" vs ")]
            if len(sides) != 2 or not all(side in arms for side in sides):
                raise ValueError(f"comparisons: {comparison!r} must be 'A vs B' with A, B among {sorted(arms)}")
        check_path_names(self)


def check_path_names(cfg: PipelineConfig) -> None:
    """Refuse a method name, setting or seed that cannot name a stage folder (`dmpo_trl.core.files.check_name`)."""

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
    try:
        return cls(**values)
    except ValueError as err:  # a setting the dataclass refuses: say which recipe
        raise ValueError(f"{where}: {err}") from None


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
    values = read_yaml_mapping(path, "pipeline recipe")
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
