"""The DMPO turn weights (torch only) against hand-computed values."""

import subprocess
import sys

import pytest
import torch

from dmpo_trl.core.weights import check_turn_weighting, dmpo_phi, dmpo_turn_weights


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


def test_turn_weighting_is_checked_in_one_place():
    assert check_turn_weighting("uniform") == "uniform"
    with pytest.raises(ValueError, match="turn_weighting.*'linear'"):
        check_turn_weighting("linear")


def test_loss_module_does_not_import_trl():
    code = "import sys, dmpo_trl.core.weights, dmpo_trl.core.objective, dmpo_trl.core.rows.tokenization; assert 'trl' not in sys.modules, 'trl imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
