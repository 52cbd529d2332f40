"""Every DPO loss type of TRL 1.16 on DMPO's multi-turn scores, in plain torch (importing this does not import TRL).

`DPOTrainer` scores a completion by its summed log-probability; DMPO scores a trajectory by the weighted sum over its
action tokens (`dmpo_trl.core.weights`). Per pair, with ``w`` the chosen and ``l`` the rejected trajectory and ``w_k`` the
DMPO weight of token ``k`` (``phi(t, T)`` on the tokens of action ``t``, 0 on every other token):

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
``sft``               the mean negative log-likelihood of the chosen action tokens of the batch (not a pair
                      function: see `dmpo_trl.core.objective`)
====================  ==============================================================================================

(``eps`` is ``label_smoothing``, ``tau`` is ``discopop_tau``.) IPO's and ``sigmoid_norm``'s average per token is the
weighted average ``z / N = sum_k w_k r_k / sum_k w_k`` over the action tokens (``r_k`` the token's log-ratio).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


__all__ = [
    "F_DIVERGENCE_LOSS_TYPES",
    "F_DIVERGENCE_TYPES",
    "LABEL_SMOOTHING_LOSS_TYPES",
    "LOSS_TYPES",
    "PAIR_LOSS_TYPES",
    "f_divergence_scores",
    "f_divergence_step_weights",
    "pair_loss",
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
#: The loss types that are functions of one pair's scores (`pair_loss`); ``sft`` is a batch-level token mean.
PAIR_LOSS_TYPES = tuple(t for t in LOSS_TYPES if t != "sft")
#: The loss types whose formula uses `label_smoothing` (TRL 1.16: ``sigmoid`` does not).
LABEL_SMOOTHING_LOSS_TYPES = ("exo_pair", "robust", "aot", "aot_unpaired")
#: The loss types built on the chosen-rejected score difference, the only ones TRL allows a non-default f-divergence
#: with (the f-DPO reparameterisation leaves a term that cancels only in that difference; in DMPO it is the same
#: constant on both sides because the step weights sum to 1).
F_DIVERGENCE_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


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


def pair_loss(
    loss_type: str,
    *,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor | None = None,
    rejected_scores: torch.Tensor | None = None,
    chosen_length: torch.Tensor | None = None,
    rejected_length: torch.Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
) -> torch.Tensor:
    """Unreduced loss of one of `PAIR_LOSS_TYPES`, one value per pair (see the module docstring for the formulas).

    Args:
        loss_type (`str`): one of `PAIR_LOSS_TYPES`.
        chosen_logps, rejected_logps (`torch.Tensor` of shape `(B,)`): policy scores ``S_w``, ``S_l``.
        ref_chosen_logps, ref_rejected_logps (`torch.Tensor` of shape `(B,)`): reference scores.
        chosen_scores, rejected_scores (`torch.Tensor`, *optional*): f-divergence scores ``z``; default ``Delta``.
        chosen_length, rejected_length (`torch.Tensor`, *optional*): ``N`` of each side, needed by ``ipo`` and
            ``sigmoid_norm`` (DPOTrainer clamps it at 1, and so does this function).
        beta (`float`): inverse temperature (IPO's ``tau``).
        label_smoothing (`float`): ``eps`` of ``exo_pair``, ``robust``, ``aot`` and ``aot_unpaired``.
        discopop_tau (`float`): DiscoPOP's temperature.

    Returns:
        `torch.Tensor` of shape `(B,)`.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    z_w = chosen_logratios if chosen_scores is None else chosen_scores
    z_l = rejected_logratios if rejected_scores is None else rejected_scores
    delta = z_w - z_l
    eps = label_smoothing

    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type in ("ipo", "sigmoid_norm"):
        if chosen_length is None or rejected_length is None:
            raise ValueError(f"loss_type={loss_type!r} needs the lengths N of both sides")
        avg_delta = z_w / chosen_length.clamp(min=1.0) - z_l / rejected_length.clamp(min=1.0)
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
    raise ValueError(f"Unknown loss type: {loss_type!r}. Should be one of {list(PAIR_LOSS_TYPES)} (or 'sft').")
