"""`DMPOConfig` refuses the numbers that would train silently wrong, with the reason."""

from __future__ import annotations

import math

import pytest
import torch

from dmpo_trl import DMPOConfig
from dmpo_trl.core.objective import LossInputs, pair_loss


def config(**kw) -> DMPOConfig:
    return DMPOConfig(output_dir="unused", use_cpu=True, bf16=False, report_to=[], **kw)


def test_beta_below_zero_would_train_backwards_and_is_refused():
    # Why: with beta < 0 the gradient of the DMPO loss pushes the chosen score *down* (checked on the loss itself)
    s_w = torch.tensor([0.0], requires_grad=True)
    loss = pair_loss(
        "sigmoid", LossInputs(s_w, torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0])), beta=-0.5
    )
    loss.sum().backward()
    assert s_w.grad.item() > 0  # gradient descent lowers S_w: the model learns to prefer the rejected side
    with pytest.raises(ValueError) as err:
        config(beta=-0.5)
    message = str(err.value)
    assert message.startswith("`beta` must be > 0, got -0.5")
    assert "away from the chosen trajectories" in message and "metric" in message


def test_beta_zero_trains_nothing_and_is_refused():
    s_w = torch.tensor([1.3], requires_grad=True)
    loss = pair_loss(
        "sigmoid", LossInputs(s_w, torch.tensor([-0.4]), torch.tensor([0.0]), torch.tensor([0.0])), beta=0.0
    )
    loss.sum().backward()
    assert loss.item() == pytest.approx(math.log(2)) and s_w.grad.item() == 0.0
    with pytest.raises(ValueError, match=r"^`beta` must be > 0, got 0: the DMPO loss is then log\(2\)"):
        config(beta=0)
    with pytest.raises(ValueError, match=r"^`beta` must be a finite number > 0, got nan"):
        config(beta=float("nan"))
    assert config(beta=0.25).beta == 0.25


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, r"one weight per loss type"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, -0.5]}, r"finite numbers >= 0"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float("inf")]}, r"finite numbers >= 0"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [0.0, 0.0]}, r"`loss_weights` are all 0"),
        ({"max_length": 0}, r"`max_length` must be >= 1"),
        ({"router_aux_loss_coef": -1.0}, r"`router_aux_loss_coef` must be a finite number >= 0"),
        ({"sync_ref_model": True, "ref_model_mixup_alpha": 1.5}, r"`ref_model_mixup_alpha` must lie in \[0, 1\]"),
        ({"sync_ref_model": True, "ref_model_sync_steps": 0}, r"`ref_model_sync_steps` must be >= 1"),
        ({"precompute_ref_batch_size": 0}, r"`precompute_ref_batch_size` must be >= 1"),
    ],
)
def test_other_numbers_the_loss_uses_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        config(**kw)


def test_a_zero_weight_on_one_loss_type_is_accepted_as_in_dpo():
    # DPOTrainer trains `["sigmoid", "sft"]` with weights [0, 1] (SFT only); so does DMPO.
    assert config(loss_type=["sigmoid", "sft"], loss_weights=[0.0, 1.0]).loss_weights == [0.0, 1.0]


def test_valid_numbers_pass():
    args = config(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.0], max_length=None, sync_ref_model=True)
    assert args.loss_weights == [1.0, 0.0] and args.max_length is None


@pytest.mark.parametrize("gamma", [True, False, "0.5", float("nan")])
def test_gamma_must_be_a_number(tmp_path, gamma):
    with pytest.raises(ValueError, match="`gamma` must be a number in \\[0, 1\\]"):
        DMPOConfig(output_dir=str(tmp_path), gamma=gamma)
