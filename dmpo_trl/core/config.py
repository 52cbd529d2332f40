"""`DMPOConfig`: `trl.DPOConfig` plus DMPO's options (discount, turn weighting, ...), checked at construction."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from . import _compat  # noqa: F401  (refuses an untested TRL before TRL itself is imported)


# isort: split
from trl import DPOConfig

from .checkpoints import move_hub_token_to_env
from .objective import F_DIVERGENCE_TYPES, LABEL_SMOOTHING_LOSS_TYPES, LOSS_TYPES
from .weights import check_turn_weighting


__all__ = ["DMPOConfig", "check_loss_options"]


@dataclass
class DMPOConfig(DPOConfig):
    r"""
    Configuration class for the [`DMPOTrainer`].

    It takes every argument of [`~trl.DPOConfig`] (and so of [`~transformers.TrainingArguments`]) and adds the DMPO
    discount factor. The two combinations DMPO cannot give a meaning are rejected at construction with an error that
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
            multi-turn DPO baseline of the DMPO paper and of ETO (`gamma` is then not used). `"dmpo_eq16"`: the
            paper's printed Eq. 16, `(1 - gamma^(T - t)) / (1 - gamma^T)` (`phi` without `gamma^t`; `(T - t) / T` at
            `gamma = 1`, every action weight 1 at `gamma = 0`).
        skip_invalid_pairs (`bool`, *optional*):
            What happens to rows DMPO cannot train on. Unset (`None`, the default): as in `DPOTrainer`, rows whose
            prompt leaves no room for an action within `max_length` are dropped, with a warning that gives their
            count, reasons and first row ids; any other bad row (no action on a side, a template that cannot be
            aligned, ...) raises an error that names the row. `True`: every bad row is dropped with that warning.
            `False`: the strict mode, every bad row raises, over-long ones included.

        > Options inherited from `DPOConfig`, on multi-turn scores (with one action per side: DPOTrainer's numbers)

        loss_type (`list[str]`, *optional*, defaults to `["sigmoid"]`):
            Every loss type of `DPOConfig`, combined with `loss_weights` as in DPOTrainer. Sequence log-ratios become
            the DMPO weighted log-ratio `S - S_ref`, lengths the weighted action-token count `N = sum_k w_k`; `"sft"`
            is the mean negative log-likelihood of the chosen action tokens of the batch (`dmpo_trl.core.objective`,
            `dmpo_trl.core.objective`).
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            As in DPOTrainer 1.16: used by `exo_pair`, `robust`, `aot` and `aot_unpaired` only (a warning says so
            when it is set for none of them).
        f_divergence_type (`str`, *optional*, defaults to `"reverse_kl"`):
            Applied to the cumulative log-ratio of every action prefix, weighted by `phi(t, T) - phi(t + 1, T)` (DMPO's
            occupancy constraint with an f-divergence); needs the reference of every action, so it is refused with
            `precompute_ref_log_probs=True`.
        ld_alpha (`float`, *optional*):
            LD-DPO on the action tokens: those past the pair's shared count of action tokens get factor `ld_alpha`.
        use_weighting (`bool`, *optional*, defaults to `False`):
            WPO with the weighted per-token average over the action tokens.
        beta (`float`, *optional*, defaults to `0.1`):
            Must be > 0 (a negative beta trains backwards with perfect-looking metrics, 0 trains nothing). The other
            numbers the loss uses are checked too: `loss_weights` (one finite weight >= 0 per loss type, not all 0),
            `max_length` >= 1, `router_aux_loss_coef` >= 0, the reference-sync settings.
        truncation_mode (`str`, *optional*, defaults to `"keep_start"`):
            Only `"keep_start"`: trajectories longer than `max_length` lose whole trailing actions (`"keep_end"` would
            drop the first actions, which carry the highest weights, and is refused).
        precompute_ref_log_probs (`bool` or `None`, *optional*, defaults to `None`):
            Whether to compute the DMPO-weighted reference scores of every pair once, before training, instead of
            running the reference in every step. `None` (DMPO's default) precomputes where that is exact and costs no
            extra reference pass: a fixed reference (no `sync_ref_model`), a loss that reads only the reference's
            trajectory scores (not a non-default `f_divergence_type`), a model that does not compute in float64 (the
            scores travel as float32, as in TRL), map-style datasets, and a run that sees every training pair at least
            once (`dmpo_trl.core.ref_cache.resolve_precompute`). As with `True`, the reference
            model is then not kept for training; `evaluate()` on a new dataset after training needs a `ref_model` or
            PEFT. Scores go through a store keyed on the pair's tokens and on everything else a reference log-prob
            depends on (`dmpo_trl.core.ref_cache.reference_context`: weights, model config, attention, dtypes,
            tokenizer and chat template, precision, library versions, `gamma`, `max_length`, `ld_alpha`;
            `ref_cache_dir`), so later epochs and later runs reuse them.
        ref_cache_dir (`str`, *optional*):
            Directory of the reference-score store (one SQLite file per context, `<context>.json` beside it says
            what it was computed with). Defaults to `$DMPO_TRL_REF_CACHE_DIR`, else
            `~/.cache/dmpo_trl/reference_scores` (an INFO line names it); `""` keeps scores in memory only (TRL's
            per-dataset cache files still apply).
        padding_free (`bool`, *optional*, defaults to `False`):
            Supported (TRL 1.16 disables it for DPO): the chosen and rejected sequences of a batch are packed into rows
            with `position_ids` restarting per sequence and no padding between them (see `dmpo_trl.core.packing`); same
            loss and gradients as the padded batch. Needs a model whose attention mask is derived from `position_ids`
            (transformers' sdpa, eager, flex or FlashAttention); this is checked on the first batch.

    Refused, with the reason in the error: `truncation_mode="keep_end"`, and a non-default `f_divergence_type` with
    `precompute_ref_log_probs=True`. Every other `DPOConfig` field is accepted and means what it means for DPO, except
    that `hub_token` is moved to this process's `HF_TOKEN` (where the Hub client reads it) and cleared, so that it is
    never saved in `training_args.bin`.
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
            "(fixed reference, no f-divergence, map-style datasets, at least one epoch)."
        },
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Directory of the reference-score store (default: $DMPO_TRL_REF_CACHE_DIR or "
            "~/.cache/dmpo_trl/reference_scores); '' keeps scores in memory only."
        },
    )
    turn_weighting: str = field(
        default="dmpo",
        metadata={
            "help": "'dmpo': action t weighted by phi(t, T); 'uniform': every action weight 1 (multi-turn DPO, the "
            "paper's and ETO's baseline; gamma unused); 'dmpo_eq16': the paper's printed Eq. 16, phi without gamma^t.",
            "choices": ["dmpo", "uniform", "dmpo_eq16"],
        },
    )
    skip_invalid_pairs: bool | None = field(
        default=None,
        metadata={
            "help": "Rows DMPO cannot train on. Default (unset): as DPOTrainer, rows whose prompt leaves no room for "
            "an action within max_length are dropped with a warning (count and first row ids), any other bad row is "
            "an error. True: every bad row is dropped with a warning. False: strict, every bad row is an error."
        },
    )

    def __post_init__(self):
        # DMPO's own checks first, so a bad DMPO setting is reported before any TrainingArguments processing
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        self._check_dmpo_options()
        self._check_numeric_options()
        super().__post_init__()
        move_hub_token_to_env(self)  # never pickled into training_args.bin; the Hub client reads HF_TOKEN

    def _check_dmpo_options(self):
        if not isinstance(self.gamma, int | float) or isinstance(self.gamma, bool) or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"`gamma` must be a number in [0, 1], got {self.gamma!r}.")
        self.gamma = float(self.gamma)
        check_turn_weighting(self.turn_weighting)
        check_loss_options(self)

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
            if not any(weights):
                raise ValueError(f"`loss_weights` are all 0, so the loss is 0 and nothing trains: {weights}.")
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


#: Why DMPO refuses ``truncation_mode="keep_end"`` (the error and the docs say the same).
KEEP_END_REASON = (
    "`truncation_mode='keep_end'` is not supported: it would cut a trajectory from the start, dropping its first "
    "actions, which carry the highest DMPO weights (phi(0, T) = 1), and the task they answer. DMPO truncates whole "
    "trailing actions instead (`truncation_mode='keep_start'`, the default; TRL 1.16 deprecates 'keep_end' too)."
)


def check_loss_options(config) -> None:
    """The `DPOConfig` loss options, checked where DMPO adds a rule; everything else is left to `DPOTrainer`.

    Raises `ValueError` for an unknown loss type, ``truncation_mode="keep_end"`` (`KEEP_END_REASON`), an unknown
    f-divergence, and a non-default f-divergence with precomputed reference log-probs (the f-divergence score needs
    the reference log-prob of every action; the cache holds one trajectory score). Warns when `label_smoothing` is set
    but no chosen loss type uses it (as in DPOTrainer 1.16, ``sigmoid`` ignores it).
    """
    unknown = [t for t in config.loss_type if t not in LOSS_TYPES]
    if unknown:
        raise ValueError(f"Unknown loss type(s) {unknown}: `loss_type` takes any of {list(LOSS_TYPES)}.")
    if config.truncation_mode != "keep_start":
        raise ValueError(
            KEEP_END_REASON
            if config.truncation_mode == "keep_end"
            else (f"Unknown truncation_mode {config.truncation_mode!r}; DMPO truncates with 'keep_start'.")
        )
    if config.f_divergence_type not in F_DIVERGENCE_TYPES:
        raise ValueError(
            f"Unknown f_divergence_type {config.f_divergence_type!r}; expected one of {list(F_DIVERGENCE_TYPES)}."
        )
    if config.f_divergence_type != "reverse_kl" and config.precompute_ref_log_probs:
        raise ValueError(
            f"`f_divergence_type={config.f_divergence_type!r}` with `precompute_ref_log_probs=True` is not supported: "
            "DMPO's f-divergence score applies f' to the cumulative log-ratio of every action prefix, which needs "
            "the reference log-prob of every action, while the precomputed cache holds one score per trajectory. "
            "Use precompute_ref_log_probs=False or f_divergence_type='reverse_kl'."
        )
    if config.label_smoothing and not set(config.loss_type) & set(LABEL_SMOOTHING_LOSS_TYPES):
        warnings.warn(
            f"label_smoothing={config.label_smoothing} has no effect with loss_type={list(config.loss_type)}: as in "
            f"DPOTrainer (TRL 1.16) it is used only by {list(LABEL_SMOOTHING_LOSS_TYPES)}.",
            UserWarning,
            stacklevel=3,
        )
