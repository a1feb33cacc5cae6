"""The Bradley–Terry loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.loss import bradley_terry_loss


def test_equal_rewards_cost_log2() -> None:
    loss = bradley_terry_loss(torch.tensor([0.3]), torch.tensor([0.3]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_hand_computed_values_with_margin_and_centering() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # -log σ(1) = 0.313262, -log σ(-1) = 1.313262
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-5)
    margin = torch.tensor([1.0, -1.0])  # diffs become 0 and 0
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx(math.log(2), abs=1e-6)
    centred = bradley_terry_loss(chosen, rejected, margin, center_rewards_coefficient=0.01)
    assert centred.item() == pytest.approx(math.log(2) + 0.01 * (9 + 1) / 2, abs=1e-6)


def test_gradient_pushes_chosen_up_and_rejected_down() -> None:
    chosen, rejected = torch.tensor([0.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.5)
