"""facerep.prototypes: DINO's head, loss, centre and temperature schedule against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerep.prototypes import Centre, PrototypeHead, linear_warmup, prototype_distillation_loss, teacher_distribution


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_loss_is_the_mean_cross_entropy_over_teacher_global_and_other_student_views():
    # B = 1, K = 3; views: global 0, global 1, one local
    s = [np.array([[0.5, -0.2, 0.1]]), np.array([[0.0, 0.3, -0.4]]), np.array([[0.9, 0.9, -0.9]])]
    t = [np.array([[0.2, 0.1, -0.3]]), np.array([[-0.1, 0.4, 0.0]])]
    c = np.array([[0.05, -0.05, 0.0]])
    tau_s, tau_t = 0.1, 0.04
    p_t = [_softmax((ti - c) / tau_t) for ti in t]
    log_p_s = [np.log(_softmax(si / tau_s)) for si in s]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # teacher view i never against the student's own view i
    expected = np.mean([-(p_t[i] * log_p_s[j]).sum() for i, j in pairs])
    probs = [teacher_distribution(torch.tensor(ti), torch.tensor(c, dtype=torch.float32), tau_t) for ti in t]
    for got, want in zip(probs, p_t, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    loss = prototype_distillation_loss([torch.tensor(si, dtype=torch.float32) for si in s], probs, tau_s)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_averages_over_the_batch_and_passes_gradients_only_to_the_student():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(4, 5, generator=g, requires_grad=True) for _ in range(3)]
    t = torch.randn(8, 5, generator=g, requires_grad=True)
    probs = teacher_distribution(t, torch.zeros(1, 5), 0.05).split(4)
    loss = prototype_distillation_loss(s, probs, 0.1)
    per_row = [prototype_distillation_loss([x[r : r + 1] for x in s], [p[r : r + 1] for p in probs], 0.1) for r in range(4)]
    assert loss.item() == pytest.approx(torch.stack(per_row).mean().item(), rel=1e-6)
    loss.backward()
    assert t.grad is None and all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    with pytest.raises(ValueError, match="two views"):
        prototype_distillation_loss(s[:1], probs[:1], 0.1)


def test_centre_moves_by_the_batch_mean_only_when_committed():
    centre = Centre(3, momentum=0.9)
    a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    centre.stage(a)
    assert torch.equal(centre.centre, torch.zeros(1, 3)), "staged, not applied: every forward of the step sees the same c"
    centre.commit()
    torch.testing.assert_close(centre.centre, 0.1 * torch.tensor([[2.0, 2.0, 2.0]]))
    centre.stage(torch.tensor([[0.0, 10.0, 0.0]]))
    centre.commit()
    torch.testing.assert_close(centre.centre, 0.9 * 0.1 * torch.tensor([[2.0, 2.0, 2.0]]) + 0.1 * torch.tensor([[0.0, 10.0, 0.0]]))
    centre.commit()  # nothing staged: no change
    torch.testing.assert_close(centre.centre, torch.tensor([[0.18, 1.18, 0.18]]))
    assert "centre" in centre.state_dict(), "the centre is checkpointed"


def test_head_gives_cosines_to_the_prototypes_and_can_freeze_them():
    torch.manual_seed(0)
    head = PrototypeHead(6, 4, hidden_dim=8, bottleneck_dim=5, layers=3)
    x = torch.randn(3, 6)
    z = head.mlp(x)
    want = (z / z.norm(dim=1, keepdim=True)) @ (head.prototypes / head.prototypes.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), want)
    assert head(x).abs().max() <= 1 + 1e-6
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    head(x).sum().backward()
    assert head.prototypes.grad is not None
    head.cancel_prototype_gradients()
    assert head.prototypes.grad is None and head.mlp[0].weight.grad is not None
    gained = PrototypeHead(6, 4, hidden_dim=8, bottleneck_dim=5, learn_norm=True)
    with torch.no_grad():
        gained.gain.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(gained(x), gained.embed(x) @ torch.nn.functional.normalize(gained.prototypes, dim=1).T * gained.gain)


def test_teacher_temperature_warmup_is_linear_then_constant():
    assert linear_warmup(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert linear_warmup(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup(30, 30, 0.04, 0.07) == linear_warmup(99, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup(10, 20, 0.07, 0.04) == pytest.approx(0.055), "LAFS's code decreases it"
    assert linear_warmup(5, 0, 0.04, 0.07) == 0.07
    assert math.isclose(linear_warmup(1, 4, 0.0, 1.0), 0.25)


def test_pooled_by_size_calls_the_backbone_once_per_run_of_same_size_views():
    from facerep.backbones import pooled_by_size
    from facerep.types import Features

    calls = []

    def backbone(x):
        calls.append(tuple(x.shape))
        return Features(pooled=x.mean((2, 3)))

    views = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    out = pooled_by_size(backbone, views)
    assert calls == [(4, 3, 8, 8), (6, 3, 4, 4)]
    torch.testing.assert_close(out, torch.cat([v.mean((2, 3)) for v in views]))


def test_prototype_init_sets_the_row_norm_of_dino_or_of_a_truncated_normal():
    """``linear`` = DINO's nn.Linear default for the last layer: U(+-1/sqrt(d)) rows of norm
    sqrt(1/3) = 0.577 whatever d; ``trunc_normal`` (std 0.02): 0.02 sqrt(d) = 0.32 at d = 256."""
    torch.manual_seed(0)
    linear = PrototypeHead(8, 4096, hidden_dim=16, bottleneck_dim=256, prototype_init="linear").prototypes.norm(dim=1)
    normal = PrototypeHead(8, 4096, hidden_dim=16, bottleneck_dim=256).prototypes.norm(dim=1)
    assert abs(float(linear.mean()) - (1 / 3) ** 0.5) < 0.005 and abs(float(normal.mean()) - 0.02 * 16) < 0.005
    with pytest.raises(ValueError, match="prototype_init"):
        PrototypeHead(8, 4, prototype_init="xavier")
