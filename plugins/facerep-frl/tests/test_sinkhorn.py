"""Sinkhorn-Knopp codes: the equipartition constraints, a hand-worked example, extreme scores."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facerep_frl import sinkhorn
from facerep_frl.sinkhorn import sinkhorn_knopp, sinkhorn_plan


def _scores(b: int, k: int, d: int, seed: int = 0) -> torch.Tensor:
    """Scores of unit embeddings against unit prototypes, as SwAV computes them."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.T


@pytest.mark.parametrize(("b", "k", "d", "n_iters"), [(64, 30, 16, 50), (32, 300, 16, 30), (256, 3000, 128, 10)])
def test_plan_gives_every_prototype_mass_1_over_k_and_every_sample_1_over_b(b, k, d, n_iters):
    plan = sinkhorn_plan(_scores(b, k, d), eps=0.05, n_iters=n_iters)  # (B, K), before the final column normalisation
    assert plan.shape == (b, k) and (plan >= 0).all()
    assert plan.sum().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(plan.sum(dim=1) * b, torch.ones(b), atol=1e-5, rtol=0)  # each sample: 1/B (last step)
    torch.testing.assert_close(plan.sum(dim=0) * k, torch.ones(k), atol=1e-3, rtol=0)  # each prototype: 1/K


def test_paper_setting_three_iterations_is_already_close_to_equipartition():
    # Bulat et al. / SwAV: K = 3000 prototypes, d = 128, eps = 0.05, 3 iterations.
    plan = sinkhorn_plan(_scores(256, 3000, 128), eps=0.05, n_iters=3)
    assert (plan.sum(dim=0) * 3000 - 1).abs().max().item() < 5e-3
    assert (plan.sum(dim=1) * 256 - 1).abs().max().item() < 1e-5


def test_codes_are_distributions_and_the_normalised_plan():
    s = _scores(64, 30, 16)
    codes = sinkhorn_knopp(s, eps=0.05, n_iters=3)
    plan = sinkhorn_plan(s, eps=0.05, n_iters=3)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(codes, plan / plan.sum(dim=1, keepdim=True))
    assert not codes.requires_grad


def test_one_iteration_matches_the_algorithm_worked_by_hand():
    # B = 2 samples, K = 2 prototypes, eps = 1, one iteration. Q = exp(S^T / eps) is K x B.
    s = [[1.0, 0.0], [0.5, 0.2]]  # s[b][k]
    q = [[math.exp(s[b][k]) for b in range(2)] for k in range(2)]
    # rows: each prototype gets mass 1/K
    q = [[q[k][b] / (2 * (q[k][0] + q[k][1])) for b in range(2)] for k in range(2)]
    # columns: each sample gets mass 1/B
    q = [[q[k][b] / (2 * (q[0][b] + q[1][b])) for b in range(2)] for k in range(2)]
    expected_plan = torch.tensor([[q[0][0], q[1][0]], [q[0][1], q[1][1]]])  # transposed to (B, K)
    codes_expected = expected_plan / expected_plan.sum(dim=1, keepdim=True)
    scores = torch.tensor(s)
    torch.testing.assert_close(sinkhorn_plan(scores, eps=1.0, n_iters=1), expected_plan)
    torch.testing.assert_close(sinkhorn_knopp(scores, eps=1.0, n_iters=1), codes_expected)
    # numbers: sample 0 leans to prototype 0, sample 1 (balanced out) to prototype 1
    assert codes_expected[0, 0] > 0.5 > codes_expected[1, 0]


def test_zero_iterations_is_the_softmax_of_scores_over_eps():
    s = _scores(8, 5, 4)
    torch.testing.assert_close(sinkhorn_knopp(s, eps=0.1, n_iters=0), torch.softmax(s / 0.1, dim=1))


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e8])
def test_extreme_scores_give_finite_codes(scale):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(16, 10, generator=g) * scale  # exp(s / 0.05) overflows float32 (and float64) by far
    s[0] = -scale * 50  # a sample far below every prototype's best
    s[:, 3] = scale * 40  # a prototype far above every other
    codes = sinkhorn_knopp(s, eps=0.05, n_iters=3)
    plan = sinkhorn_plan(s, eps=0.05, n_iters=3)
    assert torch.isfinite(codes).all() and torch.isfinite(plan).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(16))
    torch.testing.assert_close(plan.sum(dim=1), torch.full((16,), 1 / 16))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        sinkhorn_knopp(torch.zeros(3))
    with pytest.raises(ValueError, match="eps"):
        sinkhorn_knopp(torch.zeros(2, 2), eps=0.0)


# --- the plain-space path and its log-domain fallback (issue 8) ------------------------------------


def _no_log_path(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the log-domain path was taken")

    monkeypatch.setattr(sinkhorn, "_log_plan", fail)


def _count_log_path(monkeypatch) -> list[int]:
    calls = []
    original = sinkhorn._log_plan

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(sinkhorn, "_log_plan", counting)
    return calls


@pytest.mark.parametrize(("b", "k"), [(64, 300), (128, 1000), (256, 3000), (64, 3000), (256, 300)])
@pytest.mark.parametrize("n_iters", [1, 3, 10])
def test_plain_path_equals_the_log_domain_reference(monkeypatch, b, k, n_iters):
    s = _scores(b, k, 128, seed=b + k)
    reference = sinkhorn._log_codes(s, 0.05, n_iters)
    reference_plan = sinkhorn._log_plan(s, 0.05, n_iters).exp().T
    _no_log_path(monkeypatch)  # SwAV's setting never needs the fallback
    codes = sinkhorn_knopp(s, eps=0.05, n_iters=n_iters)
    torch.testing.assert_close(codes, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(sinkhorn_plan(s, eps=0.05, n_iters=n_iters) * b, reference_plan * b, atol=1e-5, rtol=0)
    assert codes.dtype == torch.float32 and codes.shape == (b, k)


def test_plain_path_with_a_wide_score_range_still_equals_the_reference(monkeypatch):
    s = _scores(64, 300, 16)  # range up to 2 / 0.03 = 67 nats: within the plain path's 80
    reference = sinkhorn._log_codes(s, 0.03, 3)
    _no_log_path(monkeypatch)
    torch.testing.assert_close(sinkhorn_knopp(s, eps=0.03, n_iters=3), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("eps", "scale"), [(0.01, 1.0), (0.05, 100.0), (0.01, 100.0)])
def test_scores_that_would_underflow_fall_back_to_the_log_domain(monkeypatch, eps, scale):
    # eps 0.01 on cosine scores: exp((s - max) / eps) down to exp(-200), 0 in float32; x100 scores: exp(-4000)
    s = _scores(64, 300, 16) * scale
    reference = sinkhorn._log_codes(s, eps, 3)
    calls = _count_log_path(monkeypatch)
    codes = sinkhorn_knopp(s, eps=eps, n_iters=3)
    plan = sinkhorn_plan(s, eps=eps, n_iters=3)
    assert len(calls) == 2  # one per call: the plain path declined
    assert torch.isfinite(codes).all() and torch.isfinite(plan).all()
    torch.testing.assert_close(codes, reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(plan.sum(dim=1) * 64, torch.ones(64), atol=1e-5, rtol=0)


def test_a_prototype_far_below_all_others_falls_back_and_gets_its_mass(monkeypatch):
    s = _scores(32, 20, 8)
    s[:, 5] -= 10.0  # (s - max) / eps below -200 for the whole column: its E column would be 0
    calls = _count_log_path(monkeypatch)
    plan = sinkhorn_plan(s, eps=0.05, n_iters=50)
    assert calls and torch.isfinite(plan).all()
    assert plan[:, 5].sum().item() == pytest.approx(1 / 20, rel=1e-3)  # equipartition reaches it anyway


def test_input_is_not_modified_and_other_layouts_and_dtypes_agree():
    s = _scores(64, 300, 16)
    before = s.clone()
    codes = sinkhorn_knopp(s)
    torch.testing.assert_close(s, before, atol=0, rtol=0)  # the plain path works in place on its own copy only
    # a transposed (non-contiguous) view and bf16 scores (as under autocast)
    torch.testing.assert_close(sinkhorn_knopp(s.T.contiguous().T), codes, atol=1e-6, rtol=0)
    s_bf16 = s.bfloat16()
    torch.testing.assert_close(sinkhorn_knopp(s_bf16), sinkhorn._log_codes(s_bf16, 0.05, 3), atol=1e-5, rtol=0)
    assert sinkhorn_knopp(s_bf16).dtype == torch.float32
