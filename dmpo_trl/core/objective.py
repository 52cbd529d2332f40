"""The DMPO objective: one trajectory score and every `DPOConfig` loss option on it, in plain torch (no TRL import).

`DPOTrainer` scores a completion by its summed log-probability; DMPO scores a trajectory by the weighted sum over its
action tokens (`weighted_score`, weights from `dmpo_trl.core.weights`). Per pair, with ``w`` the chosen and ``l`` the
rejected trajectory and ``w_k`` the DMPO weight of token ``k`` (``phi(t, T)`` on the tokens of action ``t``, 0 on every other token):

.. math::

    S = \\sum_k w_k \\log \\pi_\\theta(y_k)        (policy score; ``S^{ref}`` the same with \\pi_{ref})

    \\Delta = S - S^{ref}                         (weighted log-ratio; the reward is \\beta \\Delta)

    N = \\sum_k w_k                               (weighted number of action tokens: the trajectory's length)

    z = f-divergence score (`f_divergence_scores`; ``z = \\Delta`` for the default reverse KL)

    \\delta = z_w - z_l

Each loss type is DPOTrainer's formula with its sequence log-ratio replaced by ``\\Delta`` (or ``z``), its sequence
log-prob by ``S`` and its completion length by ``N``; with one action per side ``w_k = 1`` on the completion tokens,
so every type is exactly DPOTrainer's:

====================  ==============================================================================================
``sigmoid``           ``-log sigma(beta delta)``
``hinge``             ``relu(1 - beta delta)``
``ipo``               ``(z_w / N_w - z_l / N_l - 1 / (2 beta))^2``
``exo_pair``          ``q_w (log q_w - log(1 - eps)) + q_l (log q_l - log eps)``, ``q_w = sigma(beta delta)``,
                      ``q_l = sigma(-beta delta)``
``nca_pair``          ``-log sigma(beta Delta_w) - 1/2 log sigma(-beta Delta_w) - 1/2 log sigma(-beta Delta_l)``
``robust``            ``(-(1 - eps) log sigma(beta delta) + eps log sigma(-beta delta)) / (1 - 2 eps)``
``bco_pair``          ``-log sigma(beta Delta_w) - log sigma(-beta Delta_l)``
``sppo_hard``         ``(Delta_w - 1 / (2 beta))^2 + (Delta_l + 1 / (2 beta))^2``
``aot``               ``d = sort(S_w - S_l) - sort(S_w^ref - S_l^ref)`` over the batch,
                      ``-(1 - eps) log sigma(beta d) - eps log sigma(-beta d)``
``aot_unpaired``      the same with ``d = sort(Delta_w) - sort(Delta_l)``
``apo_zero``          ``1 - sigma(beta Delta_w) + sigma(beta Delta_l)``
``apo_down``          ``sigma(beta Delta_w) + 1 - sigma(beta (Delta_w - Delta_l))``
``discopop``          ``x = beta delta``, ``m = sigma(x / tau)``: ``(1 - m) (-log sigma(x)) + m exp(-x)``
``sigmoid_norm``      ``-log sigma(beta (z_w / N_w - z_l / N_l))``
``sft``               the mean negative log-likelihood of every chosen action token of the batch, the same for
                      every pair (see below)
====================  ==============================================================================================

(``eps`` is ``label_smoothing``, ``tau`` is ``discopop_tau``.) IPO's and ``sigmoid_norm``'s average per token is the
weighted average ``z / N = sum_k w_k r_k / sum_k w_k`` over the action tokens (``r_k`` the token's log-ratio).

`dmpo_objective` turns the per-token log-probs of a `DMPOBatch` (padded or packed) into one `LossInputs` and combines
the loss types as DPOTrainer 1.16 does:

.. math::

    loss = \\sum_i \\lambda_i \\, \\mathrm{mean}_{pairs}(\\omega \\cdot \\ell_i)          (\\lambda = loss\\_weights)

where ``omega = 1`` unless ``use_weighting`` (WPO). The per-token quantities, for token ``k`` with DMPO weight
``w_k`` (0 off the action tokens):

- LD-DPO (``ld_alpha = a``): the action tokens of each trajectory are counted in order, ``n_k = 1, 2, ...`` over the
  action tokens only (observations do not count); with ``m = min(n_w, n_l)`` the pair's shared number of action
  tokens, tokens with ``n_k > m`` get factor ``a``, the others 1, so ``S = sum_k w_k c_k log pi(y_k)`` (policy and
  reference alike). With one action per side this is DPOTrainer's split of the completion at the shared length.
- WPO (``use_weighting``): ``omega = p_w p_l`` with ``p = exp(sum_k w_k (log pi(y_k) - log sum_v pi(v)^2) / N)``,
  the weighted per-token average of WPO's aligned log-probabilities over the action tokens, computed without
  gradient (DPOTrainer's unweighted average over the completion when there is one action).
- ``sft``: ``-mean_k log pi(y_k)`` over every chosen action token of the batch, unweighted: what `SFTTrainer` with an
  assistant-only loss computes on the chosen trajectories (DPOTrainer's term when there is one action). With
  WPO it is multiplied by each pair's ``omega`` as in DPOTrainer.
- f-divergences (``f_divergence_type``): `f_divergence_scores` on the per-action log-ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .collator import DMPOBatch


__all__ = [
    "F_DIVERGENCE_LOSS_TYPES",
    "F_DIVERGENCE_TYPES",
    "LABEL_SMOOTHING_LOSS_TYPES",
    "LOSS_TYPES",
    "DMPOLossOutput",
    "LossInputs",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "dmpo_loss",
    "dmpo_objective",
    "f_divergence_scores",
    "f_divergence_step_weights",
    "pair_loss",
    "sequence_scores",
    "weighted_score",
]

#: The loss types of `DPOConfig.loss_type` in TRL 1.16, all supported.
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
#: The loss types whose formula uses `label_smoothing` (TRL 1.16: ``sigmoid`` does not).
LABEL_SMOOTHING_LOSS_TYPES = ("exo_pair", "robust", "aot", "aot_unpaired")
#: The loss types built on the chosen-rejected score difference, the only ones TRL allows a non-default f-divergence
#: with (the f-DPO reparameterisation leaves a term that cancels only in that difference; in DMPO it is the same
#: constant on both sides because the step weights sum to 1).
F_DIVERGENCE_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def weighted_score(
    per_token_logps: torch.Tensor,
    weights: torch.Tensor,
    sequence_sums: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The DMPO score ``S = sum_k w_k log p_k`` of each sequence: the one implementation every caller uses.

    Args:
        per_token_logps (`torch.Tensor`): per-token log-probs (policy or reference).
        weights (`torch.Tensor` of the same shape): per-token weights (`dmpo_trl.core.weights.dmpo_turn_weights`,
            times LD-DPO's factors where used); cast to the log-probs' dtype.
        sequence_sums (`Callable`, *optional*): sums a per-token tensor per sequence (`DMPOBatch.sequence_sums`, for
            packed rows); default: the sum over the last dimension (one sequence per row).

    Returns:
        `torch.Tensor`: one score per sequence. Tokens of weight 0 contribute exactly 0, even where their log-prob is
        not finite.
    """
    if per_token_logps.shape != weights.shape:
        raise ValueError(f"shape mismatch: logps {tuple(per_token_logps.shape)} vs weights {tuple(weights.shape)}")
    weights = weights.to(per_token_logps.dtype)
    contributions = torch.where(weights != 0, per_token_logps * weights, torch.zeros_like(per_token_logps))
    return contributions.sum(dim=-1) if sequence_sums is None else sequence_sums(contributions)


def _f_prime_of_log(log_ratio: torch.Tensor, f_divergence_type: str, alpha: float) -> torch.Tensor:
    """``f'(u)`` at ``u = exp(log_ratio)``, exactly as DPOTrainer 1.16 evaluates it on a sequence log-ratio."""
    if f_divergence_type == "reverse_kl":
        return log_ratio
    if f_divergence_type == "forward_kl":  # f'(u) = 1 - 1/u
        return 1 - torch.exp(-log_ratio)
    if f_divergence_type == "js_divergence":  # f'(u) = log(2u / (u + 1))
        return math.log(2) + F.logsigmoid(log_ratio)
    if f_divergence_type == "alpha_divergence":  # f'(u) = (u^(alpha - 1) - 1) / (alpha - 1)
        if abs(alpha - 1.0) < 1e-6:
            return log_ratio
        coef = 1.0 / (alpha - 1.0)
        x = (alpha - 1.0) * log_ratio
        dtype = x.dtype
        # DPOTrainer computes exp in float32 (clamped so it stays representable); float64 stays float64 here
        clamp_max = {torch.float16: 11.0, torch.bfloat16: 80.0}.get(dtype, 80.0)
        x = torch.clamp(x if dtype == torch.float64 else x.float(), max=clamp_max)
        return (torch.exp(x) - 1.0).to(dtype) * coef
    raise ValueError(f"Unknown f_divergence_type: {f_divergence_type!r} (expected one of {F_DIVERGENCE_TYPES})")


def f_divergence_step_weights(action_weights: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Step weights ``psi_t`` with ``sum_t psi_t R_t = sum_t phi_t r_t`` for cumulative log-ratios ``R_t``.

    ``psi_t = phi_t - phi_{t+1}`` for every kept action but the last, ``psi_{K-1} = phi_{K-1}`` for the last kept one
    (Abel summation: actions truncated away count as log-ratio 0, so ``R`` stays ``R_{K-1}`` after them). For DMPO's
    ``phi`` and a whole trajectory this is ``gamma^t (1 - gamma) / (1 - gamma^T)``, the normalised discount, which sums
    to 1; with every action weighted 1 it puts all the weight on the last action, ``R_{T-1} = sum_t r_t``.

    Args:
        action_weights (`torch.Tensor` of shape `(n, T_max)`): ``phi_t`` of each action (any value where not kept).
        kept (`torch.BoolTensor` of shape `(n, T_max)`): which actions are in the batch (a prefix of each row).

    Returns:
        `torch.Tensor` of shape `(n, T_max)`: ``psi_t``, 0 where not kept.
    """
    phi = torch.where(kept, action_weights, torch.zeros_like(action_weights))
    next_phi = torch.cat([phi[:, 1:], torch.zeros_like(phi[:, :1])], dim=1)
    return phi - next_phi


def f_divergence_scores(
    action_logratios: torch.Tensor,
    action_weights: torch.Tensor,
    kept: torch.Tensor,
    f_divergence_type: str,
    alpha: float = 0.5,
) -> torch.Tensor:
    """The f-divergence score ``z`` of each trajectory, from its per-action log-ratios.

    DMPO's constraint is on the state-action occupancy measure. With an f-divergence instead of the KL, the reward of
    step ``t`` is ``beta f'(d^pi(s_t, a_t) / d^ref(s_t, a_t))`` plus a constant, and (the environment's transitions
    cancelling) the occupancy ratio at step ``t`` is the policy ratio of the whole prefix, ``exp(R_t)`` with
    ``R_t = sum_{k <= t} r_k``. DMPO's discounted, length-normalised sum of those rewards gives

    .. math::

        z = \\sum_{t=0}^{T-1} \\psi_t f'(\\exp R_t), \\qquad \\psi_t = \\phi(t, T) - \\phi(t + 1, T)

    (`f_divergence_step_weights`). For the reverse KL, ``f'(u) = log u`` and ``z = sum_t phi(t, T) r_t = Delta``, the
    DMPO score; with one action, ``z = f'(exp r_0)``, DPOTrainer's f-DPO score. ``f'`` is evaluated exactly as
    DPOTrainer 1.16 does (including its clamping for the alpha-divergence).

    Args:
        action_logratios (`torch.Tensor` of shape `(n, T_max)`): ``r_t = log pi_theta(a_t | s_t) - log pi_ref(a_t | s_t)``
            summed over the tokens of action ``t`` (any value where not kept).
        action_weights (`torch.Tensor` of shape `(n, T_max)`): ``phi(t, T)`` of each action.
        kept (`torch.BoolTensor` of shape `(n, T_max)`): the actions present (a prefix of each row).
        f_divergence_type (`str`): ``"reverse_kl"``, ``"forward_kl"``, ``"js_divergence"`` or ``"alpha_divergence"``.
        alpha (`float`): the alpha-divergence coefficient.

    Returns:
        `torch.Tensor` of shape `(n,)`.
    """
    r = torch.where(kept, action_logratios, torch.zeros_like(action_logratios))
    cumulative = torch.cumsum(r, dim=1)
    psi = f_divergence_step_weights(action_weights.to(r.dtype), kept)
    values = _f_prime_of_log(cumulative, f_divergence_type, alpha)
    return torch.where(kept, psi * values, torch.zeros_like(values)).sum(dim=1)


class LossInputs(NamedTuple):
    """What every loss type reads, one entry per pair (`(B,)` tensors; the formulas: the module docstring)."""

    chosen_logps: torch.Tensor
    """Policy score ``S_w``."""
    rejected_logps: torch.Tensor
    """Policy score ``S_l``."""
    ref_chosen_logps: torch.Tensor
    """Reference score ``S_w^ref``."""
    ref_rejected_logps: torch.Tensor
    """Reference score ``S_l^ref``."""
    chosen_scores: torch.Tensor | None = None
    """f-divergence score ``z_w``; ``None``: ``Delta_w`` (the reverse KL)."""
    rejected_scores: torch.Tensor | None = None
    """f-divergence score ``z_l``; ``None``: ``Delta_l``."""
    chosen_length: torch.Tensor | None = None
    """``N_w``, needed by ``ipo`` and ``sigmoid_norm`` (clamped at 1, as DPOTrainer does)."""
    rejected_length: torch.Tensor | None = None
    """``N_l``, needed by ``ipo`` and ``sigmoid_norm``."""
    chosen_nll: torch.Tensor | None = None
    """0-dim mean negative log-likelihood of every chosen action token of the batch, needed by ``sft``."""


def pair_loss(
    loss_type: str, inputs: LossInputs, *, beta: float = 0.1, label_smoothing: float = 0.0, discopop_tau: float = 0.05
) -> torch.Tensor:
    """Unreduced loss of one of `LOSS_TYPES`, one value per pair (see the module docstring for the formulas).

    Args:
        loss_type (`str`): one of `LOSS_TYPES`.
        inputs (`LossInputs`): the scores (and, where the type needs them, lengths or the chosen NLL) of the pairs.
        beta (`float`): inverse temperature (IPO's ``tau``).
        label_smoothing (`float`): ``eps`` of ``exo_pair``, ``robust``, ``aot`` and ``aot_unpaired`` (every other
            type ignores it, as DPOTrainer 1.16 does).
        discopop_tau (`float`): DiscoPOP's temperature.

    Returns:
        `torch.Tensor` of shape `(B,)`.
    """
    chosen_logps, rejected_logps = inputs.chosen_logps, inputs.rejected_logps
    ref_chosen_logps, ref_rejected_logps = inputs.ref_chosen_logps, inputs.ref_rejected_logps
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    z_w = chosen_logratios if inputs.chosen_scores is None else inputs.chosen_scores
    z_l = rejected_logratios if inputs.rejected_scores is None else inputs.rejected_scores
    delta = z_w - z_l
    eps = label_smoothing

    if loss_type == "sft":
        if inputs.chosen_nll is None:
            raise ValueError("loss_type='sft' needs the chosen NLL of the batch")
        return inputs.chosen_nll.expand(chosen_logps.size(0))

    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type in ("ipo", "sigmoid_norm"):
        if inputs.chosen_length is None or inputs.rejected_length is None:
            raise ValueError(f"loss_type={loss_type!r} needs the lengths N of both sides")
        avg_delta = z_w / inputs.chosen_length.clamp(min=1.0) - z_l / inputs.rejected_length.clamp(min=1.0)
        if loss_type == "ipo":
            return (avg_delta - 1 / (2 * beta)) ** 2
        return -F.logsigmoid(beta * avg_delta)
    if loss_type == "exo_pair":
        epsilon = torch.tensor(eps, device=delta.device, dtype=delta.dtype)
        q_w, log_q_w = torch.sigmoid(beta * delta), F.logsigmoid(beta * delta)
        q_l, log_q_l = torch.sigmoid(-beta * delta), F.logsigmoid(-beta * delta)
        return q_w * (log_q_w - torch.log1p(-epsilon)) + q_l * (log_q_l - torch.log(epsilon))
    if loss_type == "nca_pair":
        r_w, r_l = beta * chosen_logratios, beta * rejected_logratios
        return -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    if loss_type == "robust":
        clean = -(1 - eps) * F.logsigmoid(beta * delta)
        flipped = -eps * F.logsigmoid(-beta * delta)
        return (clean - flipped) / (1 - 2 * eps)
    if loss_type == "bco_pair":
        return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)
    if loss_type == "sppo_hard":
        return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    if loss_type in ("aot", "aot_unpaired"):
        if loss_type == "aot":
            d = torch.sort(chosen_logps - rejected_logps, dim=0)[0]
            d = d - torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0)[0]
        else:
            d = torch.sort(chosen_logratios, dim=0)[0] - torch.sort(rejected_logratios, dim=0)[0]
        return -F.logsigmoid(beta * d) * (1 - eps) - F.logsigmoid(-beta * d) * eps
    if loss_type == "apo_zero":
        return 1 - torch.sigmoid(beta * chosen_logratios) + torch.sigmoid(beta * rejected_logratios)
    if loss_type == "apo_down":
        return (
            torch.sigmoid(beta * chosen_logratios) + 1 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios))
        )
    if loss_type == "discopop":
        logits = beta * delta
        modulation = torch.sigmoid(logits / discopop_tau)
        return -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation
    raise ValueError(f"Unknown loss type: {loss_type!r}. Should be one of {list(LOSS_TYPES)}.")


@dataclass(frozen=True)
class ObjectiveConfig:
    """The loss options of a `DMPOConfig` (the `DPOConfig` fields of the same names)."""

    loss_types: tuple[str, ...] = ("sigmoid",)
    loss_weights: tuple[float, ...] = (1.0,)
    beta: float = 0.1
    label_smoothing: float = 0.0
    discopop_tau: float = 0.05
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5
    ld_alpha: float | None = None
    use_weighting: bool = False

    def __post_init__(self):
        unknown = [t for t in self.loss_types if t not in LOSS_TYPES]
        if unknown:
            raise ValueError(f"Unknown loss type(s) {unknown}; expected any of {list(LOSS_TYPES)}.")
        if len(self.loss_weights) != len(self.loss_types):
            raise ValueError("loss_weights must have one weight per loss type")

    @classmethod
    def from_args(cls, args: Any) -> ObjectiveConfig:
        loss_types = tuple(args.loss_type)
        return cls(
            loss_types=loss_types,
            loss_weights=tuple(args.loss_weights or [1.0] * len(loss_types)),
            beta=args.beta,
            label_smoothing=args.label_smoothing,
            discopop_tau=args.discopop_tau,
            f_divergence_type=args.f_divergence_type,
            f_alpha_divergence_coef=args.f_alpha_divergence_coef,
            ld_alpha=args.ld_alpha,
            use_weighting=args.use_weighting,
        )

    @property
    def needs_action_logratios(self) -> bool:
        """Whether the loss reads per-action log-ratios (a non-default f-divergence), not only the scores ``S``."""
        return self.f_divergence_type != "reverse_kl"


class ObjectiveOutput(NamedTuple):
    """The reduced loss and what the trainer logs, per pair."""

    loss: torch.Tensor
    """Scalar loss."""
    chosen_rewards: torch.Tensor
    """`(B,)` ``beta * (S_w - S_w^ref)``, detached."""
    rejected_rewards: torch.Tensor
    """`(B,)` ``beta * (S_l - S_l^ref)``, detached."""
    chosen_logps: torch.Tensor
    """`(B,)` policy score ``S_w``, detached."""
    rejected_logps: torch.Tensor
    """`(B,)` policy score ``S_l``, detached."""


def _sequence_index(batch: DMPOBatch) -> torch.Tensor:
    """Index of each (shifted) token's sequence in ``[chosen; rejected]`` order, ``-1`` on row padding."""
    if batch.packed:
        return batch.inputs["sequence_ids"][:, 1:]
    mask = batch.action_mask
    return torch.arange(mask.size(0), device=mask.device).unsqueeze(1).expand_as(mask)


def _action_ranks(batch: DMPOBatch) -> torch.Tensor:
    """``n_k``: 1, 2, ... over the action tokens of each sequence, in order (0 off the action tokens)."""
    mask = batch.action_mask.long()
    running = mask.cumsum(dim=1)
    if batch.packed:  # restart the count at every sequence of a row: subtract the count before its first token
        seq = _sequence_index(batch)
        valid = seq >= 0
        before = running - mask
        start = torch.full((batch.num_sequences,), torch.iinfo(torch.long).max, device=mask.device)
        start = start.scatter_reduce(0, seq[valid], before[valid], reduce="amin")
        running = running - torch.where(valid, start[seq.clamp(min=0)], torch.zeros_like(running))
    return running * mask


def token_factors(batch: DMPOBatch, ld_alpha: float | None) -> torch.Tensor | None:
    """LD-DPO's per-token factor ``c_k`` (see the module docstring), or ``None`` without ``ld_alpha``."""
    if ld_alpha is None:
        return None
    ranks = _action_ranks(batch)
    counts = batch.sequence_sums(batch.action_mask.long())
    chosen, rejected = counts.chunk(2, dim=0)
    shared = torch.minimum(chosen, rejected).repeat(2)
    seq = _sequence_index(batch)
    shared_per_token = torch.where(seq >= 0, shared[seq.clamp(min=0)], torch.zeros_like(seq))
    one = torch.ones((), dtype=torch.float64, device=ranks.device)
    return torch.where(ranks > shared_per_token, one * ld_alpha, one)


def _scaled_weights(batch: DMPOBatch, ld_alpha: float | None, dtype: torch.dtype) -> torch.Tensor:
    weights = batch.weights.to(dtype)
    factors = token_factors(batch, ld_alpha)
    return weights if factors is None else weights * factors.to(dtype)


def sequence_scores(
    batch: DMPOBatch, per_token_logps: torch.Tensor, ld_alpha: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``S = sum_k w_k c_k log p_k`` (`weighted_score`) of the chosen and of the rejected sequences of a batch,
    `(B,)` each; ``c_k = 1`` without ``ld_alpha``."""
    weights = _scaled_weights(batch, ld_alpha, per_token_logps.dtype)
    return weighted_score(per_token_logps, weights, batch.sequence_sums).chunk(2, dim=0)


def action_sums(batch: DMPOBatch, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-action sums of a per-token tensor, the action weights and which actions are present.

    Returns ``(sums, phi, kept)``, each `(2B, T_max)`: ``sums[i, t]`` is the sum of ``values`` over the tokens of action
    ``t`` of sequence ``i``, ``phi[i, t]`` its DMPO weight, ``kept[i, t]`` whether it is in the batch.
    """
    if "turn_ids" not in batch.inputs:
        raise ValueError(
            "This loss needs the per-token action index `turn_ids` in the batch (DataCollatorForDMPO emits it)."
        )
    turn = batch.inputs["turn_ids"][:, 1:]
    seq = _sequence_index(batch)
    t_max = int(batch.inputs["num_turns"].max().item())
    valid = (turn >= 0) & (seq >= 0) & batch.action_mask
    index = (seq * t_max + turn)[valid]
    n = batch.num_sequences * t_max
    sums = values.new_zeros(n).scatter_add(0, index, values[valid])
    phi = (
        batch.weights.to(values.dtype)
        .new_zeros(n)
        .scatter_reduce(0, index, batch.weights.to(values.dtype)[valid], reduce="amax", include_self=False)
    )
    kept = torch.zeros(n, dtype=torch.bool, device=values.device).index_fill(0, index, True)
    shape = (batch.num_sequences, t_max)
    return sums.view(shape), phi.view(shape), kept.view(shape)


def _wpo_weights(batch: DMPOBatch, per_token_logps: torch.Tensor, log_sum_sq_probs: torch.Tensor | None):
    if log_sum_sq_probs is None:
        raise ValueError(
            "use_weighting=True needs the LM head's `log_sum_sq_probs` output (DPOTrainer requests it when "
            "use_weighting is set)."
        )
    with torch.no_grad():
        weights = batch.weights.to(per_token_logps.dtype)
        aligned = torch.where(weights != 0, (per_token_logps - log_sum_sq_probs) * weights, torch.zeros_like(weights))
        mean = batch.sequence_sums(aligned) / batch.sequence_sums(weights).clamp(min=1)
        chosen, rejected = torch.exp(mean).chunk(2, dim=0)
    return chosen * rejected


def chosen_action_nll(batch: DMPOBatch, per_token_logps: torch.Tensor) -> torch.Tensor:
    """``-mean`` of the log-probs of every chosen action token of the batch (a 0-dim tensor)."""
    chosen_mask, _ = batch.side_masks()
    return -per_token_logps[chosen_mask].mean()


def dmpo_objective(
    batch: DMPOBatch,
    config: ObjectiveConfig,
    per_token_logps: torch.Tensor,
    *,
    ref_per_token_logps: torch.Tensor | None = None,
    ref_scores: tuple[torch.Tensor, torch.Tensor] | None = None,
    log_sum_sq_probs: torch.Tensor | None = None,
) -> ObjectiveOutput:
    """The loss of one batch under `config`, from per-token log-probs aligned with ``input_ids[:, 1:]``.

    Args:
        batch (`DMPOBatch`): the collated batch.
        config (`ObjectiveConfig`): loss types, weights and options.
        per_token_logps (`torch.Tensor`): the policy's log-probs of the action tokens (0 elsewhere).
        ref_per_token_logps (`torch.Tensor`, *optional*): the reference's, when the reference runs online.
        ref_scores (`tuple`, *optional*): precomputed reference scores ``(S_w^ref, S_l^ref)`` instead; not enough for
            a non-default f-divergence, which needs the reference log-prob of every action.
        log_sum_sq_probs (`torch.Tensor`, *optional*): the LM head's ``log sum_v pi(v)^2`` per token, for WPO.
    """
    if (ref_per_token_logps is None) == (ref_scores is None):
        raise ValueError("pass exactly one of ref_per_token_logps and ref_scores")
    dtype = per_token_logps.dtype
    policy_chosen, policy_rejected = sequence_scores(batch, per_token_logps, config.ld_alpha)
    if ref_scores is None:
        ref_chosen, ref_rejected = sequence_scores(batch, ref_per_token_logps, config.ld_alpha)
    else:
        ref_chosen, ref_rejected = (s.to(dtype) for s in ref_scores)

    chosen_scores = rejected_scores = None
    if config.needs_action_logratios:
        if ref_per_token_logps is None:
            raise ValueError(
                f"f_divergence_type={config.f_divergence_type!r} needs the reference log-prob of every action; "
                "precomputed reference scores hold only the trajectory score."
            )
        diff = per_token_logps - ref_per_token_logps.to(dtype)
        token_logratios = torch.where(batch.action_mask, diff, torch.zeros_like(diff))
        factors = token_factors(batch, config.ld_alpha)
        if factors is not None:
            token_logratios = token_logratios * factors.to(dtype)
        sums, phi, kept = action_sums(batch, token_logratios)
        z = f_divergence_scores(sums, phi, kept, config.f_divergence_type, config.f_alpha_divergence_coef)
        chosen_scores, rejected_scores = z.chunk(2, dim=0)

    lengths = batch.sequence_sums(batch.weights.to(dtype))
    chosen_length, rejected_length = lengths.chunk(2, dim=0)
    omega = _wpo_weights(batch, per_token_logps, log_sum_sq_probs) if config.use_weighting else None

    inputs = LossInputs(
        chosen_logps=policy_chosen,
        rejected_logps=policy_rejected,
        ref_chosen_logps=ref_chosen,
        ref_rejected_logps=ref_rejected,
        chosen_scores=chosen_scores,
        rejected_scores=rejected_scores,
        chosen_length=chosen_length,
        rejected_length=rejected_length,
        chosen_nll=chosen_action_nll(batch, per_token_logps) if "sft" in config.loss_types else None,
    )
    loss = per_token_logps.new_zeros(())
    for loss_type, loss_weight in zip(config.loss_types, config.loss_weights, strict=True):
        per_pair = pair_loss(
            loss_type,
            inputs,
            beta=config.beta,
            label_smoothing=config.label_smoothing,
            discopop_tau=config.discopop_tau,
        )
        if omega is not None:
            per_pair = per_pair * omega
        loss = loss + per_pair.mean() * loss_weight

    return ObjectiveOutput(
        loss=loss,
        chosen_rewards=config.beta * (policy_chosen - ref_chosen).detach(),
        rejected_rewards=config.beta * (policy_rejected - ref_rejected).detach(),
        chosen_logps=policy_chosen.detach(),
        rejected_logps=policy_rejected.detach(),
    )


class DMPOLossOutput(NamedTuple):
    """Unreduced DMPO loss and the detached implicit rewards, one entry per preference pair."""

    losses: torch.Tensor
    """`(num_pairs,)` per-pair loss."""
    chosen_rewards: torch.Tensor
    """`(num_pairs,)` ``beta * (S_policy - S_ref)`` of the chosen trajectory, detached."""
    rejected_rewards: torch.Tensor
    """`(num_pairs,)` ``beta * (S_policy - S_ref)`` of the rejected trajectory, detached."""


def dmpo_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, weights: torch.Tensor, beta: float = 0.1
) -> DMPOLossOutput:
    """The default DMPO loss (``loss_type="sigmoid"``) from per-token log-probs in TRL's ``[chosen; rejected]`` layout.

    ``loss = -log sigma(beta * ((S_w - S_w^ref) - (S_l - S_l^ref)))``, exactly what `DMPOTrainer` trains with its
    default options (`dmpo_objective`: the same `weighted_score` and `pair_loss`). The sigmoid loss has no label
    smoothing in TRL 1.16 (DPOTrainer ignores `label_smoothing` for it), so this function takes none.

    Args:
        policy_logps (`torch.Tensor` of shape `(2 * num_pairs, seq_len)`):
            Per-token log-probs of the policy; rows ``0 .. num_pairs-1`` are the chosen trajectories, the rest the
            rejected ones, in the same pair order.
        ref_logps (`torch.Tensor` of the same shape): per-token log-probs of the reference model.
        weights (`torch.Tensor` of the same shape): per-token DMPO weights from `dmpo_turn_weights` (the same
            weights apply to policy and reference).
        beta (`float`): inverse temperature of the Bradley-Terry model.

    Returns:
        `DMPOLossOutput` with per-pair `losses` (unreduced) and detached `chosen_rewards` / `rejected_rewards`.
    """
    if policy_logps.size(0) % 2:
        raise ValueError("the batch must hold chosen and rejected halves of equal size")
    policy_chosen, policy_rejected = weighted_score(policy_logps, weights).chunk(2, dim=0)
    ref_chosen, ref_rejected = weighted_score(ref_logps, weights).chunk(2, dim=0)
    inputs = LossInputs(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return DMPOLossOutput(
        losses=pair_loss("sigmoid", inputs, beta=beta),
        chosen_rewards=beta * (policy_chosen - ref_chosen).detach(),
        rejected_rewards=beta * (policy_rejected - ref_rejected).detach(),
    )
