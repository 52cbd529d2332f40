"""`DMPOConfig`: `trl.DPOConfig` plus the DMPO discount factor."""

from __future__ import annotations

import math
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
        beta (`float`, *optional*, defaults to `0.1`):
            Must be > 0 (a negative beta trains backwards with perfect-looking metrics, 0 trains nothing). The other
            numbers the loss uses are checked too: `loss_weights` (one finite weight >= 0 per loss type, the DMPO term's
            > 0), `max_length` >= 1, `router_aux_loss_coef` >= 0, the reference-sync settings.
        truncation_mode (`str`, *optional*, defaults to `"keep_start"`):
            Only `"keep_start"`: trajectories longer than `max_length` lose whole trailing actions.
        precompute_ref_log_probs (`bool` or `None`, *optional*, defaults to `None`):
            Whether to compute the DMPO-weighted reference scores of every pair once, before training, instead of
            running the reference in every step. `None` (DMPO's default) precomputes where that is exact and costs no
            extra reference pass: a fixed reference (no `sync_ref_model`), map-style datasets, and a run that sees
            every training pair at least once (`dmpo_trl.ref_cache.resolve_precompute`). As with `True`, the
            reference model is then not kept for training; `evaluate()` on a new dataset after training needs a
            `ref_model` or PEFT. Scores go through a store keyed on the pair's tokens, the reference weights, `gamma`,
            `max_length` and the precision (`ref_cache_dir`), so later epochs and later runs reuse them.
        ref_cache_dir (`str`, *optional*):
            Directory of the reference-score store (one SQLite file per reference/gamma/max_length/precision).
            Defaults to `$DMPO_TRL_REF_CACHE_DIR`, else `~/.cache/dmpo_trl/reference_scores`; `""` keeps scores in
            memory only (TRL's per-dataset cache files still apply).
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
    precompute_ref_log_probs: bool | None = field(
        default=None,
        metadata={
            "help": "Compute the reference scores once before training. None (default): where exact and no dearer "
            "(fixed reference, map-style datasets, at least one epoch)."
        },
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Directory of the reference-score store (default: $DMPO_TRL_REF_CACHE_DIR or "
            "~/.cache/dmpo_trl/reference_scores); '' keeps scores in memory only."
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
        self._check_numeric_options()
        super().__post_init__()

    def _check_dmpo_options(self):
        if not isinstance(self.gamma, int | float) or not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"`gamma` must lie in [0, 1], got {self.gamma!r}.")
        self.gamma = float(self.gamma)
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

    def _check_numeric_options(self):
        """The numbers the DMPO loss types use: refuse those that would train silently wrong."""
        beta = self.beta
        if not isinstance(beta, int | float) or isinstance(beta, bool) or not math.isfinite(beta):
            raise ValueError(f"`beta` must be a finite number > 0, got {beta!r}.")
        if beta < 0:
            raise ValueError(
                f"`beta` must be > 0, got {beta}: a negative beta trains the model away from the chosen trajectories "
                "while every logged reward metric still looks right."
            )
        if beta == 0:
            raise ValueError(
                "`beta` must be > 0, got 0: the DMPO loss is then log(2) for every pair and its gradient is zero, so "
                "training would change nothing."
            )
        if self.loss_weights is not None:
            weights = list(self.loss_weights)
            if len(weights) != len(self.loss_type):
                raise ValueError(f"`loss_weights` needs one weight per loss type {self.loss_type}, got {weights}.")
            if not all(isinstance(w, int | float) and math.isfinite(w) and w >= 0 for w in weights):
                raise ValueError(f"`loss_weights` must be finite numbers >= 0, got {weights}.")
            if weights[self.loss_type.index("sigmoid")] == 0:
                raise ValueError(f"`loss_weights` gives the DMPO term ('sigmoid') weight 0: {weights}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"`max_length` must be >= 1 (tokens per trajectory) or None, got {self.max_length}.")
        coef = self.router_aux_loss_coef
        if coef is not None and not (math.isfinite(coef) and coef >= 0):
            raise ValueError(f"`router_aux_loss_coef` must be a finite number >= 0, got {coef}.")
        if self.sync_ref_model:
            if not 0.0 <= self.ref_model_mixup_alpha <= 1.0:
                raise ValueError(f"`ref_model_mixup_alpha` must lie in [0, 1], got {self.ref_model_mixup_alpha}.")
            if self.ref_model_sync_steps < 1:
                raise ValueError(f"`ref_model_sync_steps` must be >= 1, got {self.ref_model_sync_steps}.")
        if self.precompute_ref_batch_size is not None and self.precompute_ref_batch_size < 1:
            raise ValueError(f"`precompute_ref_batch_size` must be >= 1, got {self.precompute_ref_batch_size}.")
