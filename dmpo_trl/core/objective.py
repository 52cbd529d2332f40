"""The training objective of `DMPOTrainer`: every `DPOConfig` loss option on a collated DMPO batch (torch only).

`dmpo_trl.core.losses` holds the per-pair formulas; this module turns per-token log-probs of a `DMPOBatch` (padded or
packed) into the quantities they read and combines the loss types as DPOTrainer 1.16 does:

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
- f-divergences (``f_divergence_type``): `dmpo_trl.core.losses.f_divergence_scores` on the per-action log-ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .collator import DMPOBatch
from .losses import LOSS_TYPES, f_divergence_scores, pair_loss


__all__ = ["ObjectiveConfig", "ObjectiveOutput", "dmpo_objective", "sequence_scores"]


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
    """Scores ``S = sum_k w_k c_k log p_k`` of the chosen and of the rejected sequences, `(B,)` each.

    ``c_k = 1`` without ``ld_alpha``; tokens of weight 0 contribute exactly 0 even where their log-prob is not finite.
    """
    weights = _scaled_weights(batch, ld_alpha, per_token_logps.dtype)
    contributions = torch.where(weights != 0, per_token_logps * weights, torch.zeros_like(per_token_logps))
    return batch.sequence_sums(contributions).chunk(2, dim=0)


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

    loss = per_token_logps.new_zeros(())
    for loss_type, loss_weight in zip(config.loss_types, config.loss_weights, strict=True):
        if loss_type == "sft":
            per_pair = chosen_action_nll(batch, per_token_logps).expand(batch.num_pairs)
        else:
            per_pair = pair_loss(
                loss_type,
                chosen_logps=policy_chosen,
                rejected_logps=policy_rejected,
                ref_chosen_logps=ref_chosen,
                ref_rejected_logps=ref_rejected,
                chosen_scores=chosen_scores,
                rejected_scores=rejected_scores,
                chosen_length=chosen_length,
                rejected_length=rejected_length,
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
