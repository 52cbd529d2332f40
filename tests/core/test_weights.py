"""The pure DMPO loss (torch only) against hand-computed values."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dmpo_trl.core.weights import (
    dmpo_loss,
    dmpo_loss_from_scores,
    dmpo_phi,
    dmpo_turn_weights,
    weighted_sequence_logps,
)


def phi_by_hand(t, T, gamma):
    if gamma == 1.0:
        return (T - t) / T
    return gamma**t * (1 - gamma ** (T - t)) / (1 - gamma**T)


def test_phi_matches_spec_values_gamma_07_T8():
    phi = dmpo_phi(torch.arange(8), torch.tensor(8), 0.7)
    expected = [1, 0.682, 0.459, 0.303, 0.194, 0.117, 0.064, 0.026]
    assert [round(v, 3) for v in phi.tolist()] == expected
    assert phi.tolist() == pytest.approx([phi_by_hand(t, 8, 0.7) for t in range(8)], abs=1e-15)


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 0.7, 0.9, 0.99, 1 - 1e-9, 1.0])
@pytest.mark.parametrize("T", [1, 2, 8, 50, 512])
def test_phi_first_is_one_monotone_finite(gamma, T):
    phi = dmpo_phi(torch.arange(T), torch.tensor(T), gamma)
    assert torch.isfinite(phi).all()
    assert phi[0].item() == pytest.approx(1.0, abs=1e-12)
    assert (phi[1:] <= phi[:-1] + 1e-15).all()
    assert (phi >= 0).all() and (phi <= 1 + 1e-12).all()


def test_phi_gamma_zero_only_first_action():
    assert dmpo_phi(torch.arange(5), torch.tensor(5), 0.0).tolist() == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("T", [1, 3, 8, 100, 512])
def test_phi_gamma_to_one_is_continuous(T):
    limit = dmpo_phi(torch.arange(T), torch.tensor(T), 1.0)
    assert limit.tolist() == pytest.approx([(T - t) / T for t in range(T)], abs=1e-15)
    near = dmpo_phi(torch.arange(T), torch.tensor(T), 1 - 1e-9)
    assert (near - limit).abs().max().item() < 1e-6


def test_phi_rejects_bad_gamma_and_turns():
    with pytest.raises(ValueError, match="gamma"):
        dmpo_phi(torch.tensor([0]), torch.tensor(1), 1.5)
    with pytest.raises(ValueError):
        dmpo_phi(torch.tensor([3]), torch.tensor(3), 0.5)


def test_turn_weights_zero_outside_actions_and_per_turn_inside():
    turn_ids = torch.tensor([[-1, -1, 0, 0, -1, 1, 1, 1, -1], [-1, 0, 0, -1, -1, -1, -1, -1, -1]])
    w = dmpo_turn_weights(turn_ids, torch.tensor([3, 1]), 0.5)
    # T=3, gamma=0.5: phi = [1, 0.5*(1-0.25)/(1-0.125), ...]
    phi1 = 0.5 * (1 - 0.5**2) / (1 - 0.5**3)
    assert w[0].tolist() == pytest.approx([0, 0, 1, 1, 0, phi1, phi1, phi1, 0])
    assert w[1].tolist() == pytest.approx([0, 1, 1, 0, 0, 0, 0, 0, 0])
    assert (w[turn_ids < 0] == 0).all()


def test_loss_hand_computed_two_pairs():
    # pair 0: chosen T=2, rejected T=1; pair 1: chosen T=1, rejected T=3; gamma=0.7, beta=0.5
    gamma, beta = 0.7, 0.5
    turn_ids = torch.tensor([[-1, 0, 0, -1, 1], [-1, 0, -1, -1, -1], [-1, 0, -1, -1, -1], [-1, 0, -1, 1, 2]])
    num_turns = torch.tensor([2, 1, 1, 3])
    gen = torch.Generator().manual_seed(0)
    pol = -torch.rand(4, 5, generator=gen) * 3
    ref = -torch.rand(4, 5, generator=gen) * 3
    w = dmpo_turn_weights(turn_ids, num_turns, gamma)
    out = dmpo_loss(pol, ref, w, beta=beta)

    def score(row):
        T = int(num_turns[row])
        s = 0.0
        for t in range(T):
            r_t = sum(float(pol[row, k] - ref[row, k]) for k in range(5) if turn_ids[row, k] == t)
            s += phi_by_hand(t, T, gamma) * r_t
        return s

    for pair in range(2):
        margin = score(pair) - score(pair + 2)
        expected = -math.log(1 / (1 + math.exp(-beta * margin)))
        assert out.losses[pair].item() == pytest.approx(expected, rel=1e-6)
        assert out.chosen_rewards[pair].item() == pytest.approx(beta * score(pair), rel=1e-6)
        assert out.rejected_rewards[pair].item() == pytest.approx(beta * score(pair + 2), rel=1e-6)


def test_single_action_each_side_equals_dpo_on_action_tokens():
    gen = torch.Generator().manual_seed(1)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 0]])  # one action per side
    pol, ref = -torch.rand(2, 5, generator=gen), -torch.rand(2, 5, generator=gen)
    out = dmpo_loss(pol, ref, dmpo_turn_weights(torch.where(mask.bool(), 0, -1), torch.tensor([1, 1]), 0.7), beta=0.1)
    dpo_logit = 0.1 * (((pol - ref) * mask)[0].sum() - ((pol - ref) * mask)[1].sum())
    assert out.losses.item() == pytest.approx(-F.logsigmoid(dpo_logit).item(), rel=1e-6)


def test_label_smoothing_is_conservative_dpo():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.5))
    eps, beta = 0.2, 0.3
    out = dmpo_loss_from_scores(pc, pr, rc, rr, beta=beta, label_smoothing=eps)
    logit = beta * ((pc - rc) - (pr - rr))
    expected = -(1 - eps) * F.logsigmoid(logit) - eps * F.logsigmoid(-logit)
    assert out.losses.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_is_exactly_zero_off_actions_and_rewards_detached():
    turn_ids = torch.tensor([[-1, 0, 0, -1, 1], [-1, -1, 0, -1, -1]])
    w = dmpo_turn_weights(turn_ids, torch.tensor([2, 1]), 0.7)
    pol = (-torch.rand(2, 5)).requires_grad_()
    pol_inf = pol.detach().clone()
    pol_inf[turn_ids < 0] = -float("inf")  # a non-finite log-prob off the actions must not leak into the loss
    out = dmpo_loss(pol, -torch.rand(2, 5), w)
    out.losses.sum().backward()
    assert (pol.grad[turn_ids < 0] == 0).all()
    assert (pol.grad[turn_ids >= 0] != 0).all()
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    assert torch.isfinite(weighted_sequence_logps(pol_inf, w)).all()


def test_loss_module_does_not_import_trl():
    code = "import sys, dmpo_trl.core.weights, dmpo_trl.core.rows.tokenization; assert 'trl' not in sys.modules, 'trl imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
