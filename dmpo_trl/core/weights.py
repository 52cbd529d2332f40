"""The turn weights of DMPO: ``phi(t, T)`` per action and per token, and multi-turn DPO's uniform weights (torch only).

DMPO (Shi et al., "Direct Multi-Turn Preference Optimization for Language Agents", EMNLP 2024, arXiv 2406.14868)
scores a trajectory with actions ``a_0 .. a_{T-1}`` by a discounted, length-normalised sum of per-action log-ratios:

.. math::

    r_t = \\log \\pi_\\theta(a_t | s_t) - \\log \\pi_{ref}(a_t | s_t)            (summed over the tokens of action t)

    \\phi(t, T) = \\gamma^t \\frac{1 - \\gamma^{T-t}}{1 - \\gamma^T}   (0 <= gamma < 1),    (T - t) / T   (gamma = 1)

    S = \\sum_{t=0}^{T-1} \\phi(t, T) \\, r_t

    loss = -\\log \\sigma(\\beta (S_w - S_l))

This module computes the weights ``phi``; the score ``S`` and the losses are `dmpo_trl.core.objective`. Because every
token of action ``t`` carries the same weight ``phi(t, T)``, ``S`` is a per-token weighted sum:
``S = sum_k w_k (log pi_theta(y_k) - log pi_ref(y_k))`` with ``w_k = phi(t(k), T)`` on action tokens and ``0`` on
everything else (prompt, observations, template markup, padding). `dmpo_turn_weights` gives that per-token form, in
TRL's concatenated ``[chosen; rejected]`` batch layout (first half of the batch: chosen, second half: rejected).

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

import torch


__all__ = ["TURN_WEIGHTINGS", "check_turn_weighting", "dmpo_phi", "dmpo_turn_weights", "turn_weight"]

TURN_WEIGHTINGS = ("dmpo", "uniform", "dmpo_eq16")


def check_turn_weighting(turn_weighting: str) -> str:
    """Return `turn_weighting` if it is one of `TURN_WEIGHTINGS`, else raise `ValueError` (the one check of it)."""
    if turn_weighting not in TURN_WEIGHTINGS:
        names = [repr(name) for name in TURN_WEIGHTINGS]
        raise ValueError(f"`turn_weighting` must be {', '.join(names[:-1])} or {names[-1]}, got {turn_weighting!r}.")
    return turn_weighting


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
    if check_turn_weighting(turn_weighting) == "dmpo":
        return dmpo_phi(t, num_turns, gamma)
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
