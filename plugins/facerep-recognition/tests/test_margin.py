"""CosFace / ArcFace logits and losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facerep_recognition.margin import MarginClassifier, arcface_logits, cosface_logits


def _classifier(kind: str, s: float, m: float, **kw) -> MarginClassifier:
    clf = MarginClassifier(2, 2, kind=kind, s=s, m=m, **kw)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))  # normalised: the unit axes
    return clf


def test_cosface_hand_case():
    clf = _classifier("cosface", s=2.0, m=0.5)
    emb, y = torch.tensor([[3.0, 0.0]]), torch.tensor([0])  # cos = (1, 0)
    assert clf(emb, y)[0].tolist() == pytest.approx([2 * (1 - 0.5), 0.0])
    # CE of logits (1, 0) on class 0 = log(1 + e^-1)
    assert clf.loss(emb, y).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # the margin only touches the target column
    cos = torch.tensor([[0.2, 0.7, -0.1]])
    assert cosface_logits(cos, torch.tensor([1]), 64.0, 0.35)[0].tolist() == pytest.approx([12.8, 64 * (0.7 - 0.35), -6.4])


def test_arcface_hand_case():
    clf = _classifier("arcface", s=4.0, m=0.5)
    emb, y = torch.tensor([[3.0, 4.0]]), torch.tensor([0])  # cos = (0.6, 0.8), theta_0 = acos(0.6)
    target = math.cos(math.acos(0.6) + 0.5)  # = 0.6 cos 0.5 - 0.8 sin 0.5 = 0.143008...
    assert target == pytest.approx(0.6 * math.cos(0.5) - 0.8 * math.sin(0.5))
    assert clf(emb, y)[0].tolist() == pytest.approx([4 * target, 4 * 0.8], abs=1e-5)
    expected = -math.log(math.exp(4 * target) / (math.exp(4 * target) + math.exp(3.2)))
    assert clf.loss(emb, y).item() == pytest.approx(expected, abs=1e-5)


def test_arcface_beyond_pi_minus_m_and_easy_margin():
    cos = torch.tensor([[-0.96, 0.28]])  # theta_0 = acos(-0.96) > pi - 0.5 (cos(pi - 0.5) = -0.8776)
    y = torch.tensor([0])
    assert arcface_logits(cos, y, 1.0, 0.5)[0, 0].item() == pytest.approx(-0.96 - math.sin(0.5) * 0.5, abs=1e-6)
    assert arcface_logits(cos, y, 1.0, 0.5, easy_margin=True)[0, 0].item() == pytest.approx(-0.96)
    # easy margin still applies the angle where cos > 0
    pos = torch.tensor([[0.6, 0.8]])
    assert arcface_logits(pos, y, 1.0, 0.5, easy_margin=True)[0, 0].item() == pytest.approx(math.cos(math.acos(0.6) + 0.5), abs=1e-6)


def test_margin_zero_is_the_normalised_softmax_and_scale_invariant():
    torch.manual_seed(0)
    emb, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 1, 0])
    for kind in ("cosface", "arcface"):
        clf = MarginClassifier(8, 3, kind=kind, s=10.0, m=0.0)
        cos = F.normalize(emb, dim=1) @ F.normalize(clf.weight.detach(), dim=1).t()
        assert clf.loss(emb, y).item() == pytest.approx(float(F.cross_entropy(10 * cos, y)), abs=1e-5)
        assert clf.loss(7 * emb, y).item() == pytest.approx(clf.loss(emb, y).item(), abs=1e-5)


def test_margins_raise_the_loss_and_keep_finite_gradients_at_cos_one():
    clf_c, clf_a = _classifier("cosface", 8.0, 0.4), _classifier("arcface", 8.0, 0.5)
    emb = torch.tensor([[1.0, 0.0]], requires_grad=True)  # exactly on the class-0 weight: cos = 1
    y = torch.tensor([0])
    plain = float(F.cross_entropy(8 * torch.tensor([[1.0, 0.0]]), y))
    for clf in (clf_c, clf_a):
        loss = clf.loss(emb, y)
        assert loss.item() > plain
        (grad,) = torch.autograd.grad(loss, emb)
        assert torch.isfinite(grad).all()


def test_cosine_equals_normalising_both_sides_in_values_and_gradients():
    torch.manual_seed(0)
    clf = MarginClassifier(16, 9, kind="arcface", s=30.0, m=0.5)
    with torch.no_grad():
        clf.weight[3] *= 50.0  # class norms far apart: the division must be per class
    emb, y = torch.randn(6, 16, requires_grad=True), torch.tensor([0, 3, 8, 3, 1, 2])
    ref = F.normalize(emb, dim=1) @ F.normalize(clf.weight, dim=1).t()
    torch.testing.assert_close(clf.cosine(emb), ref, rtol=1e-5, atol=1e-6)
    ref_loss = F.cross_entropy(arcface_logits(ref, y, 30.0, 0.5), y)
    got = torch.autograd.grad(clf.loss(emb, y), [emb, clf.weight])
    want = torch.autograd.grad(ref_loss, [emb, clf.weight])
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
