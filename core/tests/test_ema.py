"""EMA helpers: the update rule and the cosine momentum schedule (BYOL/DINO)."""

from __future__ import annotations

import math

import pytest
import torch

from facerep.engine.ema import cosine_momentum, momentum_update


def test_cosine_momentum_goes_from_base_to_final():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(1.0 - 0.004 * (math.cos(math.pi / 2) + 1) / 2)
    assert cosine_momentum(500, 100, 0.9) == pytest.approx(1.0)  # clamped past the end


def test_momentum_update_is_the_ema_rule_and_buffers_are_opt_in():
    target, source = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        target.weight.fill_(1.0)
        source.weight.fill_(3.0)
        source.running_mean.fill_(5.0)
    momentum_update(target, source, 0.75)
    torch.testing.assert_close(target.weight, torch.full((2,), 0.75 * 1.0 + 0.25 * 3.0))
    assert target.running_mean.abs().sum() == 0  # left to the target's own forward passes
    momentum_update(target, source, 0.75, copy_buffers=True)
    torch.testing.assert_close(target.running_mean, torch.full((2,), 5.0))
