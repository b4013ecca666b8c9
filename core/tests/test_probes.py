"""Linear probe and k-NN on hand-made feature sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facerep.eval.knn import knn_predict
from facerep.eval.linear_probe import LinearProbeParams, fit_linear, probe_features, standardize


def _blobs(n: int, d: int, classes: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)) * sep
    y = rng.integers(0, classes, size=n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_standardize_clamps_near_dead_dimensions():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(100, 3)).astype(np.float32)
    train[:, 2] = 1.0 + 1e-9 * rng.normal(size=100)  # almost dead on train
    test = train.copy()
    test[:, 2] = 2.0  # shifts on test
    tr, te = standardize(train, test, std_floor=0.01)
    assert np.abs(te[:, 2]).max() < 200  # 1 / (0.01 * mean std) scale, not 1e9
    np.testing.assert_allclose(tr[:, :2].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(tr[:, :2].std(0), 1, atol=1e-5)


def test_probe_separates_separable_classes_and_is_chance_on_noise():
    x, y = _blobs(600, 16, 4, sep=6.0, seed=0)
    out = probe_features(x[:400], y[:400], x[400:], y[400:], LinearProbeParams())
    assert out["acc"] > 0.98
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(600, 16)).astype(np.float32)
    labels = rng.integers(0, 4, size=600)
    chance = probe_features(noise[:400], labels[:400], noise[400:], labels[400:], LinearProbeParams())
    assert 0.1 < chance["acc"] < 0.4


def test_probe_never_looks_at_test_labels_when_choosing_l2():
    x, y = _blobs(500, 32, 3, sep=1.0, seed=2)
    p = LinearProbeParams()
    a = probe_features(x[:300], y[:300], x[300:], y[300:], p)
    b = probe_features(x[:300], y[:300], x[300:], (y[300:] + 1) % 3, p)
    assert a["l2"] == b["l2"] and a["val_score"] == b["val_score"]
    assert a["acc"] != b["acc"]


def test_probe_multilabel_reports_mean_accuracy_over_columns():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] < 0), np.zeros(400, bool)], 1).astype(np.int64)
    out = probe_features(x[:300], y[:300], x[300:], y[300:], LinearProbeParams())
    assert out["acc_2"] == 1.0  # constant column
    assert out["acc_0"] > 0.95 and out["acc_1"] > 0.95
    np.testing.assert_allclose(out["mean_acc"], np.mean([out["acc_0"], out["acc_1"], out["acc_2"]]))


def test_knn_weighted_vote_matches_hand_computation():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    y = np.array([0, 0, 1, 1])
    test = np.array([[1, 0.05], [0.2, 1]], np.float32)
    np.testing.assert_array_equal(knn_predict(train, y, test, k=2, temperature=0.1), [0, 1])
    # k=4 with a huge temperature is a plain majority; with a tie-breaking third vote for class 1
    y3 = np.array([0, 1, 1, 1])
    assert knn_predict(train, y3, test[:1], k=4, temperature=100.0)[0] == 1
    # with a sharp temperature the single nearest neighbour dominates
    assert knn_predict(train, y3, test[:1], k=4, temperature=0.01)[0] == 0


@pytest.mark.parametrize("multilabel", [False, True])
def test_wide_features_are_fitted_in_their_row_space_at_the_full_problems_optimum(multilabel):
    # d = 120 > n = 40: fit_linear solves in the 40-dim row space; the result must be a stationary
    # point of the original objective mean loss + l2 ||W||^2 (gradient ~ 0 in all 120 dims)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 120)).astype(np.float32)
    y = (rng.random(size=(40, 5)) < 0.4).astype(np.int64) if multilabel else rng.integers(0, 3, size=40)
    n_out = 5 if multilabel else 3
    l2 = 1e-2
    w, b = fit_linear(x, y, l2, n_out=n_out, multilabel=multilabel, max_iter=500)
    assert w.shape == (120, n_out)
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    logits = torch.from_numpy(x).double() @ w + b
    yt = torch.from_numpy(y)
    loss = F.binary_cross_entropy_with_logits(logits, yt.double()) if multilabel else F.cross_entropy(logits, yt)
    (loss + l2 * (w * w).sum()).backward()
    assert w.grad.abs().max() < 1e-5 and b.grad.abs().max() < 1e-5
    # warm-started from another l2's solution (as fit_probe does) it reaches the same optimum
    w0 = fit_linear(x, y, 1.0, n_out=n_out, multilabel=multilabel)
    w2, _ = fit_linear(x, y, l2, n_out=n_out, multilabel=multilabel, max_iter=500, init=w0)
    torch.testing.assert_close(w2, w.detach(), atol=1e-4, rtol=0)  # |dW| <= |grad| / (2 l2)


def _objective(x, y, w, b, l2, multilabel):
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    logits, yt = torch.from_numpy(x).double() @ w + b, torch.from_numpy(y)
    loss = F.binary_cross_entropy_with_logits(logits, yt.double()) if multilabel else F.cross_entropy(logits, yt)
    loss = loss + l2 * (w * w).sum()
    loss.backward()
    return loss.item(), max(w.grad.abs().max().item(), b.grad.abs().max().item())


def test_tall_correlated_features_reach_the_optimum_with_equal_weights_on_a_repeated_column():
    # n = 300 > d = 21: standardised columns mixed to a condition number ~1e8 of x^T x, plus a copy
    # of column 0 (a direction with no variance in the principal axes, dropped). The penalised
    # optimum is stationary and splits the repeated column's weight evenly (any other split has a
    # larger ||W||)
    rng = np.random.default_rng(1)
    q1, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    q2, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    x = rng.normal(size=(300, 20)) @ q1 @ np.diag(np.logspace(-3, 1, 20)) @ q2
    x = (x - x.mean(0)) / x.std(0)
    x = np.concatenate([x, x[:, :1]], 1).astype(np.float32)
    y = rng.integers(0, 4, size=300)
    w, b = fit_linear(x, y, 1e-4, n_out=4, multilabel=False)
    assert _objective(x, y, w, b, 1e-4, False)[1] < 1e-5
    torch.testing.assert_close(w[0], w[-1], atol=1e-8, rtol=0)
    assert w[0].abs().max() > 0.1  # the column carries weight: the equality is not 0 == 0


def test_weak_l2_wide_fit_converges_within_a_small_iteration_budget():
    # a decaying spectrum (singular values ~ 1/k) and a weak L2: in raw coordinates L-BFGS needs
    # ~300 iterations here (objective 0.2359 after 100, 1.6 % above the optimum); preconditioned
    # by the principal axes' spread it is within 1e-5 after 100
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 200)) * np.arange(1, 201) ** -1.0) @ rng.normal(size=(200, 600))
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = (rng.random(size=(200, 10)) < 0.3).astype(np.int64)
    best, _ = _objective(x, y, *fit_linear(x, y, 1e-4, n_out=10, multilabel=True, max_iter=1000), 1e-4, True)
    budget, _ = _objective(x, y, *fit_linear(x, y, 1e-4, n_out=10, multilabel=True, max_iter=100), 1e-4, True)
    assert 0 <= budget - best < 1e-5


def test_fit_probe_refit_is_the_optimum_on_the_whole_split_at_the_chosen_l2():
    # the refit starts from the validation fit re-expressed for the whole split's standardisation;
    # wherever it starts, it must end at the whole split's optimum
    from facerep.eval.linear_probe import fit_probe

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(150, 60)) * np.linspace(0.5, 5, 60) + rng.normal(size=60) * 3).astype(np.float32)
    y = (x[:, :3] @ rng.normal(size=(3, 4)) + rng.gumbel(size=(150, 4))).argmax(1)
    probe = fit_probe(x, y, LinearProbeParams(l2_grid=(1e-3, 1e-1)), 4)
    xa = ((x - probe.mean) / probe.std).astype(np.float32)
    assert _objective(xa, y, probe.w, probe.b, probe.info["l2"], False)[1] < 1e-5


def _ridge_by_hand(z: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """min ||y - b - z w||^2 + lam ||w||^2 with an unpenalised intercept, by the normal equations."""
    zm, ym = z.mean(0), y.mean(0)
    zc = z - zm
    w = np.linalg.solve(zc.T @ zc + lam * np.eye(z.shape[1]), zc.T @ (y - ym))
    return w, ym - zm @ w


def test_ridge_probe_leave_one_out_error_equals_refitting_without_each_sample():
    from facerep.eval.linear_probe import feature_stats, fit_ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)) * [1, 2, 3, 0.5, 1]
    y = x[:, :2] @ rng.normal(size=(2, 3)) + 0.3 * rng.normal(size=(12, 3))
    alphas = (0.01, 0.3, 10.0)
    fit = fit_ridge(x, y, alphas)
    mean, std = feature_stats(x)
    z = (x - mean) / std
    scale = np.mean(np.linalg.svd(z - z.mean(0), compute_uv=False) ** 2)
    loo = {}
    for alpha in alphas:  # brute force: N refits, each without one sample, scored on it
        res = []
        for i in range(len(z)):
            keep = np.arange(len(z)) != i
            w, b = _ridge_by_hand(z[keep], y[keep], alpha * scale)
            res.append(y[i] - (z[i] @ w + b))
        loo[alpha] = float(np.mean(np.square(res)))
    best = min(loo, key=loo.get)
    assert fit.info["ridge_alpha"] == best
    np.testing.assert_allclose(fit.info["loo_mse"], loo[best], rtol=1e-9)
    w, b = _ridge_by_hand(z, y, best * scale)  # the final fit on all samples, same weight
    np.testing.assert_allclose(fit.predict(x[:4]), z[:4] @ w + b, atol=1e-9)


def test_ridge_probe_falls_back_to_the_mean_on_noise_and_recovers_a_linear_map():
    from facerep.eval.linear_probe import fit_ridge

    rng = np.random.default_rng(1)
    ratios = []
    for d in (5, 200, 200, 200):  # narrow and wide (as grid readouts at 24 training faces) noise
        x, noise_target = rng.normal(size=(30, d)), rng.normal(size=(30, 4))
        fit = fit_ridge(x, noise_target)
        xt, yt = rng.normal(size=(500, d)), rng.normal(size=(500, 4))
        ratios.append(np.mean((fit.predict(xt) - yt) ** 2) / np.mean((noise_target.mean(0) - yt) ** 2))
        assert fit.info["loo_mse"] <= fit.info["loo_mse_mean_predictor"] * (1 + 1e-9)
    # nothing to learn: close to the mean predictor on average (30 samples: the choice itself is noisy)
    assert np.mean(ratios) < 1.1 and max(ratios) < 1.25
    w = rng.normal(size=(200, 4)) / 14
    xtr, xt = rng.normal(size=(200, 200)), rng.normal(size=(100, 200))
    fit = fit_ridge(xtr, xtr @ w + 0.05 * rng.normal(size=(200, 4)))
    err = np.mean((fit.predict(xt) - xt @ w) ** 2) / np.mean((xt @ w) ** 2)
    assert err < 0.1 and fit.info["loo_mse"] < 0.1 * fit.info["loo_mse_mean_predictor"]
    with pytest.raises(ValueError, match="at least 3"):
        fit_ridge(xt[:2], yt[:2])


@pytest.mark.parametrize("multilabel", [False, True])
def test_float32_products_reach_the_float64_optimum(multilabel):
    # fit_probe runs the design's two products in float32 (the weights, loss and L-BFGS state stay
    # float64): on a wide, decaying spectrum it must land on the float64 fit's optimum
    from facerep.eval.linear_probe import fit_in_axes, principal_axes

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(120, 120)) * np.arange(1, 121) ** -0.7) @ rng.normal(size=(120, 400))
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = (rng.random(size=(120, 6)) < 0.3).astype(np.int64) if multilabel else rng.integers(0, 4, size=120)
    n_out = 6 if multilabel else 4
    axes = principal_axes(x)
    var = axes.s**2 / len(x)
    fits = {dt: fit_in_axes(axes.coords, var, y, 1e-3, n_out=n_out, multilabel=multilabel, tol=1e-7, max_iter=1000, matmul_dtype=dt)
            for dt in (torch.float64, torch.float32)}
    f64, g64 = _objective(x, y, axes.to_features(fits[torch.float64][0]), fits[torch.float64][1], 1e-3, multilabel)
    f32, g32 = _objective(x, y, axes.to_features(fits[torch.float32][0]), fits[torch.float32][1], 1e-3, multilabel)
    assert g64 < 1e-5 and g32 < 1e-5
    assert abs(f32 - f64) < 1e-6 * f64  # float32 products: the optimum to six digits
    assert fits[torch.float32][0].dtype == torch.float64  # the returned weights are float64


def test_l2_path_ends_after_patience_weaker_weights_score_below_the_best():
    # separable-ish blobs: the validation score peaks at a strong weight; with patience 2 the path
    # stops two weights later and picks what the whole grid picks
    x, y = _blobs(300, 20, 3, sep=0.6, seed=4)
    grid = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    full = probe_features(x[:200], y[:200], x[200:], y[200:], LinearProbeParams(l2_grid=grid, l2_patience=0))
    short = probe_features(x[:200], y[:200], x[200:], y[200:], LinearProbeParams(l2_grid=grid, l2_patience=2))
    assert full["l2_path"] == len(grid)
    assert short["l2"] == full["l2"] and short["val_score"] == full["val_score"]
    assert short["l2_path"] < len(grid)


def test_wide_ridge_through_the_gram_matrix_equals_the_normal_equations():
    # D > N takes the Gram route (eigh of z z^T): the weights must be the normal equations' ridge
    from facerep.eval.linear_probe import feature_stats, fit_ridge

    rng = np.random.default_rng(6)
    x = rng.normal(size=(20, 50)) * np.linspace(0.2, 3, 50)
    y = x[:, :3] @ rng.normal(size=(3, 4)) + 0.1 * rng.normal(size=(20, 4))
    fit = fit_ridge(x, y)
    mean, std = feature_stats(x)
    z = (x - mean) / std
    w, b = _ridge_by_hand(z, y, fit.info["ridge_lambda"])
    np.testing.assert_allclose(fit.predict(x[:5] + 0.3), (z[:5] + 0.3 / std) @ w + b, atol=1e-8)


def test_float32_axes_keep_the_leading_spectrum_and_fit_near_the_exact_optimum():
    # principal_axes(float32=True) (fit_probe's route from FLOAT32_AXES_FROM rows): the directions
    # it keeps are the exact ones to float32 precision, and the fit over them is within a hair of
    # the exact optimum; with a spectrum spanning 1e9 the tail below 1e-6 of the top is dropped
    from facerep.eval.linear_probe import fit_in_axes, principal_axes

    rng = np.random.default_rng(7)
    x = (rng.normal(size=(150, 150)) * np.logspace(0, -4.5, 150)) @ rng.normal(size=(150, 500))
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = rng.integers(0, 3, size=150)
    exact, fast = principal_axes(x), principal_axes(x, float32=True)
    assert len(fast.s) < len(exact.s)
    assert fast.s.min() ** 2 > 1e-6 * fast.s.max() ** 2
    torch.testing.assert_close(fast.s[-5:], exact.s[-5:], rtol=1e-4, atol=0)
    objective = {}
    for name, axes in (("exact", exact), ("fast", fast)):
        w, b = fit_in_axes(axes.coords, axes.s**2 / len(x), y, 1e-3, n_out=3, multilabel=False, tol=1e-8, max_iter=2000)
        objective[name] = _objective(x, y, axes.to_features(w), b, 1e-3, False)[0]
    assert -1e-9 < objective["fast"] - objective["exact"] < 1e-3 * objective["exact"]
