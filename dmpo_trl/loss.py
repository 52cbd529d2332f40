"""The DMPO objective, in plain torch (importing this module does not import TRL).

DMPO (Shi et al., "Direct Multi-Turn Preference Optimization for Language Agents", EMNLP 2024, arXiv 2406.14868)
scores a trajectory with actions ``a_0 .. a_{T-1}`` by a discounted, length-normalised sum of per-action log-ratios:

.. math::

    r_t = \\log \\pi_\\theta(a_t | s_t) - \\log \\pi_{ref}(a_t | s_t)            (summed over the tokens of action t)

    \\phi(t, T) = \\gamma^t \\frac{1 - \\gamma^{T-t}}{1 - \\gamma^T}   (0 <= gamma < 1),    (T - t) / T   (gamma = 1)

    S = \\sum_{t=0}^{T-1} \\phi(t, T) \\, r_t

    loss = -\\log \\sigma(\\beta (S_w - S_l))

Because every token of action ``t`` carries the same weight ``phi(t, T)``, ``S`` is a per-token weighted sum:
``S = sum_k w_k (log pi_theta(y_k) - log pi_ref(y_k))`` with ``w_k = phi(t(k), T)`` on action tokens and ``0`` on
everything else (prompt, observations, template markup, padding). The functions below work on that per-token form,
in TRL's concatenated ``[chosen; rejected]`` batch layout (first half of the batch: chosen, second half: rejected).

Note: Eq. 16 of the paper omits the ``gamma^t`` factor; the derivation and the authors' code include it, and so
does the default weighting. The printed variant is ``turn_weighting="dmpo_eq16"``:
``w(t, T) = (1 - gamma^(T-t)) / (1 - gamma^T)`` (``(T - t) / T`` at ``gamma = 1``, ``1`` for every action at
``gamma = 0``), i.e. ``phi(t, T) / gamma^t``.

Multi-turn DPO (the baseline of the DMPO paper and of ETO) is the same loss with every action weighted 1
(``turn_weighting="uniform"``, `turn_weight`): ``S = sum_t r_t``, the sum of the action tokens' log-ratios over the
whole trajectory, observations still excluded.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


__all__ = [
    "DMPOLossOutput",
    "dmpo_loss",
    "dmpo_loss_from_scores",
    "dmpo_phi",
    "dmpo_turn_weights",
    "turn_weight",
    "weighted_sequence_logps",
]

TURN_WEIGHTINGS = ("dmpo", "uniform", "dmpo_eq16")


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not (0.0 <= gamma <= 1.0) or math.isnan(gamma):
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    return gamma


def dmpo_phi(t: torch.Tensor, num_turns: torch.Tensor, gamma: float) -> torch.Tensor:
    """DMPO turn weight ``phi(t, T)``, elementwise, computed in float64.

    Exact and continuous on the whole range ``0 <= gamma <= 1``:

    - ``gamma = 0``: ``phi = 1`` for ``t = 0`` and ``0`` otherwise (``0^0 = 1``);
    - ``0 < gamma < 1``: ``gamma^t * expm1((T - t) log gamma) / expm1(T log gamma)``, which stays accurate as
      ``gamma -> 1`` (``gamma = 1 - 1e-9`` agrees with the limit to ~1e-9) and never overflows for large ``T``;
    - ``gamma = 1``: the limit ``(T - t) / T``.

    Args:
        t (`torch.Tensor`): turn indices ``0 <= t < T`` (any integer or float dtype).
        num_turns (`torch.Tensor`): number of actions ``T >= 1`` of the trajectory, broadcastable to ``t``.
        gamma (`float`): discount factor in ``[0, 1]``.

    Returns:
        `torch.Tensor`: float64 weights with the broadcast shape of ``t`` and ``num_turns``.
    """
    gamma = _check_gamma(gamma)
    t = torch.as_tensor(t, dtype=torch.float64)
    T = torch.as_tensor(num_turns, dtype=torch.float64, device=t.device)
    if bool(((T < 1) | (t < 0) | (t >= T)).any()):
        raise ValueError("dmpo_phi needs 0 <= t < T and T >= 1")
    if gamma == 0.0:
        return (t == 0).to(torch.float64) + 0.0 * T
    if gamma == 1.0:
        return (T - t) / T
    log_gamma = math.log(gamma)
    return torch.exp(t * log_gamma) * torch.expm1((T - t) * log_gamma) / torch.expm1(T * log_gamma)


def turn_weight(t: torch.Tensor, num_turns: torch.Tensor, gamma: float, turn_weighting: str = "dmpo") -> torch.Tensor:
    """Weight of action ``t`` of a trajectory with ``T`` actions, elementwise, in float64.

    - ``"dmpo"``: ``phi(t, T)`` (`dmpo_phi`);
    - ``"uniform"``: ``1`` for every action (multi-turn DPO: ``S = sum_t r_t``); `gamma` is not used;
    - ``"dmpo_eq16"``: the paper's printed Eq. 16, ``(1 - gamma^(T-t)) / (1 - gamma^T)`` (``phi`` without
      ``gamma^t``). Limits: ``gamma = 1`` gives ``(T - t) / T`` (as ``phi``); ``gamma = 0`` gives ``1`` for every
      action (``0^(T-t) = 0^T = 0`` since ``T - t >= 1``), i.e. multi-turn DPO; ``w(0, T) = 1`` for every gamma.

    Same argument checks as `dmpo_phi` (``0 <= t < T``).
    """
    if turn_weighting == "dmpo":
        return dmpo_phi(t, num_turns, gamma)
    if turn_weighting not in ("uniform", "dmpo_eq16"):
        raise ValueError(f"turn_weighting must be one of {TURN_WEIGHTINGS}, got {turn_weighting!r}")
    gamma = _check_gamma(gamma)
    t = torch.as_tensor(t, dtype=torch.float64)
    T = torch.as_tensor(num_turns, dtype=torch.float64, device=t.device)
    if bool(((T < 1) | (t < 0) | (t >= T)).any()):
        raise ValueError("turn_weight needs 0 <= t < T and T >= 1")
    if turn_weighting == "uniform" or gamma == 0.0:
        return torch.ones_like(t) + 0.0 * T
    if gamma == 1.0:
        return (T - t) / T
    log_gamma = math.log(gamma)  # expm1 keeps the ratio accurate as gamma -> 1
    return torch.expm1((T - t) * log_gamma) / torch.expm1(T * log_gamma)


def dmpo_turn_weights(
    turn_ids: torch.Tensor,
    num_turns: torch.Tensor,
    gamma: float,
    dtype: torch.dtype = torch.float32,
    turn_weighting: str = "dmpo",
) -> torch.Tensor:
    """Per-token DMPO weights from per-token turn indices.

    Args:
        turn_ids (`torch.LongTensor` of shape `(batch, seq_len)`):
            Index ``t`` of the action each token belongs to, ``-1`` for tokens that are not actions (prompt,
            observations, template markup, padding).
        num_turns (`torch.LongTensor` of shape `(batch,)`):
            ``T`` of each sequence: the real number of actions of the trajectory (not the number kept after
            truncation, so kept actions keep the weight they would have had).
        gamma (`float`): discount factor in ``[0, 1]``.
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the result.
        turn_weighting (`str`, defaults to `"dmpo"`): ``"dmpo"`` (``phi(t, T)``), ``"uniform"`` (``1`` on every
            action token: multi-turn DPO) or ``"dmpo_eq16"`` (the paper's printed Eq. 16), see `turn_weight`.

    Returns:
        `torch.Tensor` of shape `(batch, seq_len)`: the action weight on action tokens, exactly ``0`` elsewhere.
    """
    if turn_ids.dim() != 2 or num_turns.dim() != 1 or num_turns.size(0) != turn_ids.size(0):
        raise ValueError("turn_ids must be (batch, seq_len) and num_turns (batch,)")
    is_action = turn_ids >= 0
    T = num_turns.to(turn_ids.device).unsqueeze(1).expand_as(turn_ids)
    if bool((turn_ids >= T).any()):
        raise ValueError("a turn index is >= the sequence's number of turns")
    weights = torch.zeros(turn_ids.shape, dtype=torch.float64, device=turn_ids.device)
    if bool(is_action.any()):
        weights[is_action] = turn_weight(turn_ids[is_action], T[is_action], gamma, turn_weighting)
    return weights.to(dtype)


def weighted_sequence_logps(per_token_logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k * logp_k`` per sequence: the DMPO score ``S`` of a policy (or reference) on each sequence.

    ``per_token_logps`` and ``weights`` are aligned (same shape, `(batch, seq_len)`); positions with weight 0 contribute
    exactly 0 even if their log-prob is not finite.
    """
    if per_token_logps.shape != weights.shape:
        raise ValueError(f"shape mismatch: logps {tuple(per_token_logps.shape)} vs weights {tuple(weights.shape)}")
    contributions = per_token_logps * weights.to(per_token_logps.dtype)
    return torch.where(weights != 0, contributions, torch.zeros_like(contributions)).sum(dim=-1)


class DMPOLossOutput(NamedTuple):
    """Unreduced DMPO loss and the detached implicit rewards, one entry per preference pair."""

    losses: torch.Tensor
    """`(num_pairs,)` per-pair loss."""
    chosen_rewards: torch.Tensor
    """`(num_pairs,)` ``beta * (S_policy - S_ref)`` of the chosen trajectory, detached."""
    rejected_rewards: torch.Tensor
    """`(num_pairs,)` ``beta * (S_policy - S_ref)`` of the rejected trajectory, detached."""


def dmpo_loss_from_scores(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> DMPOLossOutput:
    """DMPO loss from the weighted scores ``S`` of policy and reference, each of shape `(num_pairs,)`.

    ``loss = -(1 - eps) log sigma(beta * delta) - eps log sigma(-beta * delta)`` with
    ``delta = (S_w - S_w^ref) - (S_l - S_l^ref)``; ``eps = label_smoothing`` gives conservative DPO (cDPO), ``eps = 0``
    the plain DMPO objective.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    logits = beta * (chosen_logratios - rejected_logratios)
    losses = -F.logsigmoid(logits)
    if label_smoothing > 0.0:
        losses = (1.0 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    return DMPOLossOutput(
        losses=losses,
        chosen_rewards=beta * chosen_logratios.detach(),
        rejected_rewards=beta * rejected_logratios.detach(),
    )


def dmpo_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    weights: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> DMPOLossOutput:
    """DMPO loss from per-token log-probs in TRL's concatenated ``[chosen; rejected]`` layout.

    Args:
        policy_logps (`torch.Tensor` of shape `(2 * num_pairs, seq_len)`):
            Per-token log-probs of the policy; rows ``0 .. num_pairs-1`` are the chosen trajectories, the rest the
            rejected ones, in the same pair order.
        ref_logps (`torch.Tensor` of the same shape): per-token log-probs of the reference model.
        weights (`torch.Tensor` of the same shape): per-token DMPO weights from `dmpo_turn_weights` (the same
            weights apply to policy and reference).
        beta (`float`): inverse temperature of the Bradley-Terry model.
        label_smoothing (`float`): probability that a preference label is flipped (cDPO); ``0`` for DMPO.

    Returns:
        `DMPOLossOutput` with per-pair `losses` (unreduced) and detached `chosen_rewards` / `rejected_rewards`.
    """
    if policy_logps.size(0) % 2:
        raise ValueError("the batch must hold chosen and rejected halves of equal size")
    policy_scores = weighted_sequence_logps(policy_logps, weights)
    ref_scores = weighted_sequence_logps(ref_logps, weights)
    policy_chosen, policy_rejected = policy_scores.chunk(2, dim=0)
    ref_chosen, ref_rejected = ref_scores.chunk(2, dim=0)
    return dmpo_loss_from_scores(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing)
