"""`DMPOConfig`: `trl.DPOConfig` plus the DMPO discount factor."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _compat  # noqa: F401  (refuses an untested TRL before TRL itself is imported)


# isort: split
from trl import DPOConfig


__all__ = ["DMPOConfig", "SUPPORTED_LOSS_TYPES"]

SUPPORTED_LOSS_TYPES = ("sigmoid", "sft")


@dataclass
class DMPOConfig(DPOConfig):
    r"""
    Configuration class for the [`DMPOTrainer`].

    It takes every argument of [`~trl.DPOConfig`] (and so of [`~transformers.TrainingArguments`]) and adds the DMPO
    discount factor. Options of `DPOConfig` that DMPO does not support are rejected at construction with an error that
    says why, instead of being silently ignored.

    Parameters:
        > Parameters that control the DMPO loss

        gamma (`float`, *optional*, defaults to `0.7`):
            Discount factor of DMPO, in `[0, 1]`. Action `t` of a trajectory with `T` actions is weighted by
            `phi(t, T) = gamma^t (1 - gamma^(T - t)) / (1 - gamma^T)` (`(T - t) / T` at `gamma = 1`). `gamma = 0`
            trains on the first action only; larger values spread the weight over later actions. The authors use 0.7
            by default and found smaller values better with noisy losing trajectories, larger ones with clean ones.
        turn_weighting (`str`, *optional*, defaults to `"dmpo"`):
            How the actions of a trajectory are weighted. `"dmpo"`: by `phi(t, T)` above (the DMPO loss). `"uniform"`:
            every action weight 1, observations still masked, so `S = sum_t r_t` over the whole trajectory: the
            multi-turn DPO baseline of the DMPO paper and of ETO (`gamma` is then not used).
        skip_invalid_pairs (`bool`, *optional*, defaults to `False`):
            Whether to drop the rows DMPO cannot train on (no action on a side, a template that cannot be aligned, a
            side that keeps no action after truncation, ...) instead of raising an error on the first one. Dropped rows
            are counted and their reasons logged.

        > Options inherited from `DPOConfig`, with DMPO's restrictions

        loss_type (`list[str]`, *optional*, defaults to `["sigmoid"]`):
            `["sigmoid"]` is the DMPO objective. `["sigmoid", "sft"]` (with `loss_weights`) adds the mean negative
            log-likelihood of the chosen trajectory's action tokens (observations and prompt excluded). Other DPO loss
            types are not defined for multi-turn trajectories and are rejected.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            Probability that a preference label is flipped (conservative DPO), in `[0, 0.5)`.
        truncation_mode (`str`, *optional*, defaults to `"keep_start"`):
            Only `"keep_start"`: trajectories longer than `max_length` lose whole trailing actions.
        precompute_ref_log_probs (`bool`, *optional*, defaults to `False`):
            Supported; the cached reference scores are DMPO-weighted, so the cache is keyed on `gamma` and
            `max_length` as well as on the dataset and the reference model.
        padding_free (`bool`, *optional*, defaults to `False`):
            Supported (TRL 1.16 disables it for DPO): the chosen and rejected sequences of a batch are packed into rows
            with `position_ids` restarting per sequence and no padding between them (see `dmpo_trl.packing`); same
            loss and gradients as the padded batch. Needs a model whose attention mask is derived from `position_ids`
            (transformers' sdpa, eager, flex or FlashAttention); this is checked on the first batch.

    Not supported (rejected): `ld_alpha`, `f_divergence_type` other than `"reverse_kl"`, `use_weighting`,
    `truncation_mode="keep_end"`.
    """

    gamma: float = field(
        default=0.7,
        metadata={
            "help": "DMPO discount factor in [0, 1]: action t of a trajectory of T actions is weighted by "
            "gamma^t (1 - gamma^(T-t)) / (1 - gamma^T) ((T - t) / T at gamma = 1)."
        },
    )
    turn_weighting: str = field(
        default="dmpo",
        metadata={
            "help": "'dmpo': action t weighted by phi(t, T); 'uniform': every action weight 1 (multi-turn DPO, the "
            "paper's and ETO's baseline; gamma unused).",
            "choices": ["dmpo", "uniform"],
        },
    )
    skip_invalid_pairs: bool = field(
        default=False,
        metadata={
            "help": "Drop rows DMPO cannot train on (counted and logged with their reasons) instead of raising an "
            "error on the first one."
        },
    )

    def __post_init__(self):
        # DMPO's own checks first, so a bad DMPO setting is reported before any TrainingArguments processing
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        self._check_dmpo_options()
        super().__post_init__()

    def _check_dmpo_options(self):
        if not isinstance(self.gamma, int | float) or not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"`gamma` must lie in [0, 1], got {self.gamma!r}.")
        self.gamma = float(self.gamma)
        if self.turn_weighting not in ("dmpo", "uniform"):
            raise ValueError(f"`turn_weighting` must be 'dmpo' or 'uniform', got {self.turn_weighting!r}.")
        unknown = [t for t in self.loss_type if t not in SUPPORTED_LOSS_TYPES]
        if unknown or "sigmoid" not in self.loss_type or len(set(self.loss_type)) != len(self.loss_type):
            raise ValueError(
                f"DMPO supports `loss_type=['sigmoid']` (the DMPO objective) or `['sigmoid', 'sft']` (plus an NLL "
                f"term on the chosen actions); got {self.loss_type}. The other DPO loss types are not defined on "
                "discounted multi-turn scores."
            )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"`label_smoothing` must lie in [0, 0.5) for DMPO, got {self.label_smoothing}.")
        rejected = {
            "ld_alpha": (
                self.ld_alpha is not None,
                "LD-DPO re-weights tokens by position, which conflicts with DMPO's per-turn weights",
            ),
            "f_divergence_type": (
                self.f_divergence_type != "reverse_kl",
                "DMPO is derived for the reverse-KL occupancy constraint",
            ),
            "use_weighting": (self.use_weighting, "WPO weighting is not defined for multi-turn scores"),
            "truncation_mode": (
                self.truncation_mode != "keep_start",
                "DMPO truncates whole trailing actions (truncation_mode='keep_start')",
            ),
        }
        bad = [f"`{name}` ({why})" for name, (is_set, why) in rejected.items() if is_set]
        if bad:
            raise ValueError("DMPOConfig does not support: " + "; ".join(bad) + ".")
