"""Linear probe: frozen backbone, standardised pooled features, L2-regularised linear classifier.

What the probe reads is its ``readout``: the pooled vector (default), or a layout-keeping
readout of the backbone's configured intermediate layers (``Features.layers``): ``grid<k>`` (each
layer average-pooled to a k x k grid, flattened and concatenated), ``layers_mean`` (the global mean
of each layer) or, for ViTs, ``cls_mean`` (per layer its CLS token and mean patch token).

The L2 weight is chosen on a seeded validation split of the *training* data, then the classifier
is refit on the whole training split and scored once on the test split (which is never used for
any choice). Single-label targets get multinomial logistic regression (accuracy); multi-label 0/1
targets such as the 40 CelebA attributes get one logistic regression per column (mean accuracy).
Fitting is full-batch L-BFGS on the extracted features, which is exact and fast at probe scale.

Tasks with a continuous target (``Task.probe_target``, e.g. the landmarks' normalised
coordinates) get closed-form ridge regression on the same standardised readout instead: the ridge
weight is chosen by exact leave-one-out error (every training image is used to fit and to choose,
which matters at 24 images), and the largest weight of the grid is the mean predictor (the mean
shape), so the probe scores what the features add to the training mean.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from facerep.config import FieldError
from facerep.data.subset import label_array
from facerep.errors import ConfigError
from facerep.protocols import Backbone, FaceDataset, Task
from facerep.types import Features

__all__ = ["FLOAT32_AXES_FROM", "READOUTS", "RIDGE_ALPHAS", "FittedProbe", "FittedRidge", "LinearProbe", "LinearProbeParams",
           "PrincipalAxes", "fit_in_axes", "fit_linear", "fit_probe", "fit_ridge", "principal_axes", "probe_features", "readout",
           "standardize"]

#: The probe's readouts (``grid<k>`` for any k >= 1, e.g. ``grid2``, ``grid4``).
READOUTS = ("pooled", "grid<k>", "layers_mean", "cls_mean")
_GRID = re.compile(r"grid([1-9][0-9]*)")
#: Ridge weights of the regression probe, relative to the mean squared singular value of the
#: standardised training features (so the grid means the same at any dimension or sample count);
#: the last, 1e6, is the mean predictor for any practical purpose.
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(-3.0, 6.01, 0.5))


class ReadoutError(FieldError, ConfigError):
    """An unknown readout name: a field error in config files, a ConfigError when built in code."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="readout")
        self.args = (f"protocol.params.readout: {message}",)


def _readout_problem(name: Any) -> str | None:
    if isinstance(name, str) and (name in ("pooled", "layers_mean", "cls_mean") or _GRID.fullmatch(name)):
        return None
    return f"unknown readout {name!r}; choose pooled, grid<k> (k >= 1, e.g. grid2, grid4), layers_mean or cls_mean"


def _check_readout(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    problem = _readout_problem(value)
    if problem:
        raise ReadoutError(problem)


@attrs.frozen
class LinearProbeParams:
    image_size: int | None = None  # resize inputs to this square size (None: as stored)
    batch_size: int = 256
    num_workers: int = 0
    precision: str = "fp32"
    l2_grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    val_fraction: float = 0.2
    max_iter: int = 300
    #: L-BFGS stops when no gradient entry (in the preconditioned axes) exceeds this: 1e-5 gives
    #: the same choices and test scores as 1e-7 within 2e-4 at half the iterations (issue 22).
    tol: float = 1e-5
    #: The L2 path (strong to weak) stops after this many consecutive weaker weights all score
    #: below the best on the validation part (0: always the whole grid).
    l2_patience: int = 2
    #: Feature std is clamped from below at this fraction of the mean std: near-dead dimensions
    #: would otherwise explode on the test split (see notes/science.md).
    std_floor: float = 0.01
    seed: int = 0
    device: str = "auto"
    #: AdamW lr of the linear head of tasks without a ``probe_label`` (trained on frozen features).
    head_lr: float = 1e-2
    #: What the closed-form probe reads: ``pooled`` (the backbone's pooled vector), ``grid<k>``
    #: (every configured intermediate layer average-pooled to k x k, flattened, concatenated),
    #: ``layers_mean`` (global mean of every configured layer) or ``cls_mean`` (ViTs: per layer the
    #: CLS token and the mean patch token). All but ``pooled`` need the backbone's ``layers``
    #: (``backbone.params.layers`` or the entry's ``backbone_layers``).
    readout: str = attrs.field(default="pooled", validator=_check_readout)


def readout(features: Features, name: str = "pooled") -> torch.Tensor:
    """``(B, D)`` probe input of ``features`` under the readout ``name`` (see :class:`LinearProbeParams`)."""
    problem = _readout_problem(name)
    if problem:
        raise ConfigError(f"protocol.params.readout: {problem}")
    if name == "pooled":
        return features.pooled
    maps = list(features.layers)
    if not maps:
        raise ConfigError(f"protocol.params.readout: {name!r} reads the backbone's intermediate layers but it returned none "
                          "(configure them: backbone.params.layers or the evaluate entry's backbone_layers)")
    if name == "layers_mean":
        parts = [m.float().mean((2, 3)) for m in maps]
    elif name == "cls_mean":
        if len(features.layer_cls) != len(maps):
            raise ConfigError(f"protocol.params.readout: 'cls_mean' needs a CLS token per layer (ViT backbones); this backbone gives "
                              f"{len(features.layer_cls)} for {len(maps)} layers (use layers_mean or grid<k>)")
        parts = [t for cls, m in zip(features.layer_cls, maps, strict=True) for t in (cls.float(), m.float().mean((2, 3)))]
    else:
        k = int(_GRID.fullmatch(name)[1])  # type: ignore[index]
        parts = [F.adaptive_avg_pool2d(m.float(), k).flatten(1) for m in maps]
    return torch.cat(parts, 1)


def feature_stats(train: np.ndarray, std_floor: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the training features, the std clamped from below (see ``std_floor``)."""
    std = train.std(0)
    return train.mean(0), np.maximum(std, std_floor * float(std.mean()) + 1e-12)


def standardize(train: np.ndarray, *others: np.ndarray, std_floor: float = 0.01) -> list[np.ndarray]:
    mean, std = feature_stats(train, std_floor)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


@attrs.frozen
class PrincipalAxes:
    """The principal axes of features ``x`` (n, D): orthonormal ``V`` (D, r) spanning the rows of
    ``x``, the coordinates ``x V`` (n, r, orthogonal columns of norms ``s``). With D > n, ``V`` is
    never formed: ``V = x^T U / s`` with ``U = x V / s``, so maps to and from D dimensions go
    through ``x`` (n x D x k work instead of n x D x r)."""

    coords: torch.Tensor  # x V, (n, r)
    s: torch.Tensor  # (r,)
    x: torch.Tensor | None = None  # D > n: the features themselves
    v: torch.Tensor | None = None  # D <= n: V

    def to_features(self, w: torch.Tensor) -> torch.Tensor:
        """``V w``: weights on the axes (r, k) as weights on the features (D, k)."""
        if self.v is not None:
            return self.v @ w
        return self.x.T @ (self.coords @ (w / (self.s * self.s)[:, None]))

    def to_axes(self, w: torch.Tensor) -> torch.Tensor:
        """``V^T w``: weights on the features (D, k) as weights on the axes (r, k)."""
        if self.v is not None:
            return self.v.T @ w
        return (self.coords / (self.s * self.s)).T @ (self.x @ w)


#: From this many training rows on, :func:`fit_probe` decomposes in float32 (``principal_axes(...,
#: float32=True)``): at CelebA's 8,000 and FER2013's 9,776 rows the float64 eigendecomposition
#: alone took 88 and ~160 s of 215 and 371 s (issue 22).
FLOAT32_AXES_FROM = 4096


def principal_axes(x: np.ndarray | torch.Tensor, *, float32: bool = False) -> PrincipalAxes:
    """:class:`PrincipalAxes` of ``x`` from the eigendecomposition of the smaller Gram matrix:
    ``x x^T = U S^2 U^T`` (``x V = U S``) when D > n, else ``x^T x = V S^2 V^T``, rather than an SVD
    of ``x`` (for 1,280 x 8,192 features 2.5 s against 30 s here; the grid search reuses it for
    every L2). Directions with S below 1e-5 of the largest are dropped (their Gram eigenvalues are
    at rounding level; their weights would be ~S^2 / l2 of the others').

    ``float32=True`` forms and decomposes the Gram matrix in float32 (2.2x faster at 8,000 rows: 50 s against 111 s here)
    and keeps the directions with S^2 above 1e-6 of the largest (float32's eigenvalues are exact to
    ~5e-7 of it): the fit is then the optimum over that subspace. On FER2013's 9,776 x 15,360 grid4
    readouts it kept 5,970 of 9,776 directions; the penalised objective came out 2e-4 above the
    exact fit's (relative), with the same L2 chosen and test accuracy 0.4021 vs 0.4018."""
    xt = torch.as_tensor(x).double()
    wide = xt.shape[1] > xt.shape[0]
    xg = xt.float() if float32 else xt
    lam, u = torch.linalg.eigh(xg @ xg.T if wide else xg.T @ xg)
    lam, u, floor = lam.double(), u.double(), (1e-6 if float32 else 1e-10)
    keep = lam > lam[-1] * floor
    lam, u = lam[keep], u[:, keep]
    s = lam.sqrt()
    return PrincipalAxes(u * s, s, x=xt) if wide else PrincipalAxes(xt @ u, s, v=u)


def fit_linear(x: np.ndarray, y: np.ndarray, l2: float, *, n_out: int, multilabel: bool, max_iter: int = 300,
               init: tuple[torch.Tensor, torch.Tensor] | None = None,
               axes: PrincipalAxes | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean loss + l2 * ||W||^2 with L-BFGS; returns (W (D, n_out), b (n_out,)).

    The problem is solved in the principal axes of ``x`` (``axes``, from ``principal_axes(x)`` when
    not given), which is exact: the penalised optimum satisfies ``2 l2 W = -x^T G`` (G the loss
    gradient w.r.t. the logits), so W lies in the row space of ``x`` (the representer theorem), where
    ``x W = x' W'`` and ``||W|| = ||W'||`` for the coordinates ``x' = x V``. With more dimensions
    than samples (layout-keeping readouts: 800 x 15,360) that space is also smaller. See
    :func:`fit_in_axes` for the solver.
    """
    axes = principal_axes(x) if axes is None else axes
    start = None if init is None else (axes.to_axes(init[0].double()), init[1].double())
    w, b = fit_in_axes(axes.coords, axes.s * axes.s / len(axes.coords), y, l2, n_out=n_out, multilabel=multilabel,
                       max_iter=max_iter, init=start)
    return axes.to_features(w), b


def fit_in_axes(coords: torch.Tensor, var: torch.Tensor, y: np.ndarray, l2: float, *, n_out: int, multilabel: bool,
                max_iter: int = 300, init: tuple[torch.Tensor, torch.Tensor] | None = None, tol: float = 1e-7,
                matmul_dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean loss + l2 * ||W'||^2 over weights ``W'`` on principal-axis coordinates
    ``coords`` (n, r) whose columns have variance ``var`` (r,) on the whole training split; returns
    (W' (r, n_out), b). ``coords`` may be a subset of the rows the axes were computed on (the L2
    choice fits 80 % of them): W' then still spans every direction its rows can reach.

    In those axes the objective's Hessian is close to diagonal, ``c var + 2 l2`` with ``c`` the loss
    curvature, so L-BFGS runs on ``v = d * W'``, ``d = sqrt(var + 2 l2)`` (``c = 1``, fewest function
    evaluations of 0.25-16 on real 15,360-d readouts): the same optimum, a Hessian near the identity.
    Without it the 40-attribute fits on those readouts stopped at ``max_iter`` with gradients
    40-2,700x the tolerance. The gradient is written out (``z^T (p - y) / n`` for softmax and
    sigmoid alike) rather than taken by autograd, and L-BFGS keeps scikit-learn's / SciPy's 10
    correction pairs: at probe scale the solver's own bookkeeping, not the matrix products,
    dominated (a history of 100 spent 60 of 110 s of one network row's probes in vector dots).

    ``tol`` bounds the largest gradient entry (in ``v``) at the stop. ``matmul_dtype=float32`` runs
    the two products with the design in float32 (everything else, the weights, the loss and L-BFGS's
    state, stays float64): twice as fast, and on real 15,360-d readouts the same objective to six
    digits and the same validation choices and test scores (``benchmarks/bench_probe.py``; the
    tests compare it with float64 on hand-made features).
    """
    yt = torch.from_numpy(np.asarray(y))
    n = len(yt)
    d = (var + 2.0 * l2).sqrt()
    z = (coords / d).to(matmul_dtype)  # the columns of the preconditioned design
    pen = 1.0 / (d * d)[:, None]  # ||W'||^2 = sum(v^2 / d^2)
    target = yt.double() if multilabel else F.one_hot(yt, n_out).double()
    scale = 1.0 / (n * n_out) if multilabel else 1.0 / n  # facerep's losses are means over samples (and columns)
    if init is None:
        w, b = torch.zeros(z.shape[1], n_out, dtype=torch.float64), torch.zeros(n_out, dtype=torch.float64)
    else:
        w, b = init[0] * d[:, None], init[1].clone()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=10, tolerance_grad=tol, tolerance_change=1e-10,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        logits = torch.addmm(b.to(matmul_dtype), z, w.to(matmul_dtype)).double()
        if multilabel:  # mean binary cross-entropy: softplus(l) - y l
            loss = (F.softplus(logits) - target * logits).sum() * scale
            g = (torch.sigmoid(logits) - target) * scale
        else:
            logp = F.log_softmax(logits, 1)
            loss = -(target * logp).sum() * scale
            g = (logp.exp() - target) * scale
        wp = w * pen
        w.grad = (z.T @ g.to(matmul_dtype)).double().add_(wp, alpha=2.0 * l2)
        b.grad = g.sum(0)
        return loss + l2 * (w * wp).sum()

    with torch.no_grad():
        opt.step(closure)
    return w / d[:, None], b


def _scores(pred: np.ndarray, y: np.ndarray, multilabel: bool, prefix: str = "") -> dict[str, float]:
    if multilabel:
        per = (pred == y).mean(0)
        return {f"{prefix}mean_acc": float(per.mean()), **{f"{prefix}acc_{i}": float(a) for i, a in enumerate(per)}}
    out = {f"{prefix}acc": float((pred == y).mean())}
    classes = np.unique(y)
    out[f"{prefix}mean_class_acc"] = float(np.mean([(pred[y == c] == c).mean() for c in classes]))
    return out


@attrs.define
class FittedProbe:
    """A fitted probe: standardisation statistics and the linear map; ``logits(x)`` for new features."""

    mean: np.ndarray
    std: np.ndarray
    w: torch.Tensor
    b: torch.Tensor
    multilabel: bool
    info: dict[str, float]

    def logits(self, x: np.ndarray) -> torch.Tensor:
        z = torch.from_numpy(((x - self.mean) / self.std).astype(np.float32)).double()
        return (z @ self.w + self.b).float()


def fit_probe(xtr: np.ndarray, ytr: np.ndarray, p: LinearProbeParams, n_out: int | None = None) -> FittedProbe:
    """Choose the L2 weight on a seeded validation part of the training features, refit on all.

    The features are standardised once with the whole training split's statistics (label-free, so
    the validation rows' features may inform them) and decomposed once (:func:`principal_axes`):
    every fit of the L2 path reads the fitting rows of those coordinates, the validation rows are
    scored in them, and the refit on the whole split starts from the chosen fit as it stands. One
    eigendecomposition per probe instead of one per split halves its cost at the 100 % shapes."""
    multilabel = ytr.ndim == 2
    n_out = ytr.shape[1] if multilabel else int(n_out or ytr.max() + 1)
    rng = np.random.default_rng(p.seed)
    perm = rng.permutation(len(xtr))
    n_val = max(1, round(p.val_fraction * len(xtr)))
    val, fit = perm[:n_val], perm[n_val:]
    mean, std = feature_stats(xtr, p.std_floor)
    axes = principal_axes(((xtr - mean) / std).astype(np.float32), float32=len(xtr) >= FLOAT32_AXES_FROM)
    var = axes.s * axes.s / len(xtr)
    solve = dict(n_out=n_out, multilabel=multilabel, max_iter=p.max_iter, tol=p.tol, matmul_dtype=torch.float32)
    best, best_acc, wb, best_wb, worse, path = p.l2_grid[-1], -1.0, None, None, 0, 0
    for l2 in sorted(p.l2_grid, reverse=True):  # strong -> weak, warm-started
        wb = fit_in_axes(axes.coords[fit], var, ytr[fit], l2, init=wb, **solve)
        logits = axes.coords[val] @ wb[0] + wb[1]
        pred = (logits > 0).long().numpy() if multilabel else logits.argmax(1).numpy()
        acc = next(iter(_scores(pred, ytr[val], multilabel).values()))
        path += 1
        if acc > best_acc:
            best, best_acc, best_wb, worse = l2, acc, wb, 0
        elif acc < best_acc:
            worse += 1
            if worse == p.l2_patience:
                break
    w, b = fit_in_axes(axes.coords, var, ytr, best, init=best_wb, **solve)
    info = {"l2": best, "val_score": best_acc, "l2_path": float(path), "n_train": float(len(xtr)), "dim": float(xtr.shape[1])}
    return FittedProbe(mean, std, axes.to_features(w), b, multilabel, info)


def probe_features(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, p: LinearProbeParams) -> dict[str, float]:
    """The probe on already extracted features (also used by benchmarks)."""
    multilabel = ytr.ndim == 2
    n_out = None if multilabel else int(max(ytr.max(), yte.max()) + 1)
    probe = fit_probe(xtr, ytr, p, n_out)
    logits = probe.logits(xte).double()
    pred = (logits > 0).long().numpy() if multilabel else logits.argmax(1).numpy()
    out = _scores(pred, yte, multilabel)
    out.update(probe.info, n_test=float(len(xte)))
    return out


@attrs.define
class FittedRidge:
    """Ridge regression on standardised features: ``predict(x) = ((x - mean) / std) @ w + b``."""

    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    b: np.ndarray
    info: dict[str, float]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.w + self.b


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = RIDGE_ALPHAS, std_floor: float = 0.01) -> FittedRidge:
    """Ridge regression of ``y`` (N, T) on standardised ``x`` (N, D), unpenalised intercept, one
    weight for all T outputs, chosen by exact leave-one-out error.

    With ``Z`` the centred standardised features, ``Z = U S V^T`` and ``lambda = alpha *
    mean(s^2)``: ``W = V diag(s / (s^2 + lambda)) U^T (y - ybar)``, the hat matrix is
    ``H = 11^T / N + U diag(s^2 / (s^2 + lambda)) U^T``, and the leave-one-out residual of row i
    is ``(y_i - yhat_i) / (1 - H_ii)`` (exact for penalised least squares; Hastie, Tibshirani &
    Friedman, ESL 2nd ed., eq. 7.52 and its ridge case). No validation split is held out.
    """
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64).reshape(len(x), -1)
    n = len(x64)
    if n < 3:
        raise ValueError(f"the ridge probe needs at least 3 training samples, got {n}")
    mean, std = feature_stats(x64, std_floor)
    z = (x64 - mean) / std  # centred: mean is the mean of x
    ybar = y64.mean(0)
    yc = y64 - ybar
    # the SVD through the smaller Gram matrix (as principal_axes; the whole probe of 237 x 15,360
    # AFW readouts: 0.085 s, 3.9x RidgeCV's); V (D x r) is never formed: weights = z^T U diag(1 / s) (.)
    wide = z.shape[1] > n
    lam, e = np.linalg.eigh(z @ z.T if wide else z.T @ z)
    keep = lam > max(lam[-1], 0.0) * 1e-12 + 1e-300  # s > 1e-6 s_max (Gram rounding); none for constant features
    lam, e = lam[keep][::-1], e[:, keep][:, ::-1]
    s = np.sqrt(lam)
    u = e if wide else z @ e / s
    scale = float(np.mean(s**2)) if len(s) else 1.0
    uty = u.T @ yc
    best: tuple[float, float] = (np.inf, max(alphas))
    for alpha in sorted(alphas, reverse=True):  # strong -> weak: a weaker fit must be better, not tied
        shrink = s**2 / (s**2 + alpha * scale)
        fitted = u @ (shrink[:, None] * uty)
        h = 1.0 / n + (u**2) @ shrink
        err = float(np.mean(((yc - fitted) / np.maximum(1.0 - h, 1e-12)[:, None]) ** 2))
        # ties happen: with many more isotropic dimensions than samples every weight has the mean
        # predictor's leave-one-out error, and the mean predictor is then the honest choice
        if err < best[0] * (1 - 1e-6):
            best = (err, alpha)
    err, alpha = best
    coef = (s / (s**2 + alpha * scale))[:, None] * uty  # on the axes V = z^T U / s
    w = z.T @ (u @ (coef / s[:, None])) if wide else e @ coef
    mean_loo = float(np.mean(yc**2)) * n**2 / (n - 1) ** 2  # the mean predictor's: residual x n / (n - 1)
    info = {"ridge_alpha": alpha, "ridge_lambda": alpha * scale, "loo_mse": err, "loo_mse_mean_predictor": mean_loo,
            "n_train": float(n), "dim": float(x64.shape[1])}
    return FittedRidge(mean, std, w, ybar, info)


@torch.no_grad()
def pooled_views(backbone: Backbone, task: Task, dataset: FaceDataset, p: LinearProbeParams) -> tuple[list[np.ndarray], list[dict]]:
    """Probe features (``p.readout``, pooled for params without one) of every test view of every
    prepared (test-mode) image (reused within a :func:`~facerep.eval.protocols.feature_cache`,
    keyed by the readout)."""
    views, metas, _ = _probe_rows(backbone, task, dataset, p)
    return views, metas


@torch.no_grad()
def _probe_rows(backbone: Backbone, task: Task, dataset: FaceDataset,
                p: LinearProbeParams) -> tuple[list[np.ndarray], list[dict], list[dict]]:
    """:func:`pooled_views` plus each sample's prepared targets, kept from the same pass (the
    regression probe reads its ``probe_target`` there instead of preparing the images again)."""
    from facerep.eval.protocols import PreparedData, _autocast, _loader, cached_rows

    name = getattr(p, "readout", "pooled")
    backbone.eval()
    device = _device(backbone)

    def compute(data: FaceDataset) -> tuple[list, list]:
        rows: list = []
        metas: list[dict] = []
        for images, target, meta in _loader(PreparedData(task, data, train=False), p.batch_size, p.num_workers):
            views = []
            for x in task.test_views(images):
                with _autocast(device, p.precision):
                    views.append(readout(backbone(backbone.preprocess(x.to(device))), name).float().cpu().numpy())
            rows.extend((np.stack([v[j] for v in views]), {k: t[j].numpy() for k, t in target.items()}) for j in range(len(images)))
            metas.extend(meta)
        return rows, metas

    if name == "pooled":
        key: tuple = ("pooled", id(backbone), p.precision)  # shared with the k-NN probe
    else:  # the layers a readout reads can change between entries: key by them too
        key = ("readout", name, tuple(getattr(getattr(backbone, "params", None), "layers", ()) or ()), id(backbone), p.precision)
    rows, metas = cached_rows(dataset, key, compute)
    stacked = np.stack([r[0] for r in rows])  # (N, views, D)
    return [stacked[:, v] for v in range(stacked.shape[1])], metas, [r[1] for r in rows]


def _device(backbone: Backbone) -> torch.device:
    for tensor in (*backbone.parameters(), *backbone.buffers()):
        return tensor.device
    return torch.device("cpu")


class LinearProbe:
    """Closed-form probe on pooled features (or another ``readout``): logistic regression for
    tasks with a ``probe_label``, ridge regression for tasks with a ``probe_target``; other tasks
    get their linear head trained on frozen features (``build_head(..., linear=True)``, which reads
    what the task's head selects)."""

    name = "linear_probe"

    def __init__(self, params: LinearProbeParams | None = None) -> None:
        self.params = params or LinearProbeParams()

    def run(self, backbone: Backbone, task: Task | str, train: FaceDataset, test: FaceDataset, val: FaceDataset | None = None) -> Any:
        from facerep.eval.label_task import LabelTask
        from facerep.eval.protocols import EvalOutput, FrozenHeadParams, LinearHeadProtocol, resolve_device

        p = self.params
        if isinstance(task, str):  # a bare label field: classify it from the whole image
            task = LabelTask(task, train, p.image_size)
        if task.probe_label is None and getattr(task, "probe_target", None):
            return self._ridge(backbone, task, train, test)
        if task.probe_label is None:
            if p.readout != "pooled":
                raise ConfigError(f"protocol.params.readout: {p.readout!r} applies to the closed-form probes (tasks with a probe_label or "
                                  f"a probe_target); task {task.name} has neither (its linear head reads its own features): use 'pooled'")
            # a linear map on raw (unstandardised) features: a larger step than the nonlinear heads' 1e-3
            frozen = FrozenHeadParams(batch_size=min(p.batch_size, 64), lr=p.head_lr, num_workers=p.num_workers, precision=p.precision,
                                      seed=p.seed, device=p.device)
            return LinearHeadProtocol(frozen).run(backbone, task, train, test, val)
        backbone.to(resolve_device(p.device))
        ytr = label_array(train, task.probe_label)
        if ytr is None:
            raise ConfigError(f"dataset {train.info.name}: label {task.probe_label!r} is not annotated on every sample")
        n_classes = len(train.info.class_names.get(task.probe_label, ())) or None
        (xtr, *_), _ = pooled_views(backbone, task, train, p)
        probe = fit_probe(xtr, ytr, p, None if ytr.ndim == 2 else max(int(ytr.max()) + 1, n_classes or 0))
        xte_views, metas = pooled_views(backbone, task, test, p)
        preds = task.predict([probe.logits(x) for x in xte_views], metas)
        metrics = task.evaluate(preds, test)
        metrics.update(probe.info)
        return EvalOutput(metrics, preds)

    def _ridge(self, backbone: Backbone, task: Task, train: FaceDataset, test: FaceDataset) -> Any:
        """Closed-form ridge regression of the task's continuous ``probe_target`` (see :func:`fit_ridge`)."""
        from facerep.eval.protocols import EvalOutput, resolve_device

        p = self.params
        key = task.probe_target  # type: ignore[attr-defined]
        backbone.to(resolve_device(p.device))
        if len(train) < 3:
            raise ConfigError(f"dataset {train.info.name}: the ridge probe of task {task.name} needs at least 3 training samples, "
                              f"got {len(train)} (raise the fraction)")
        (xtr, *_), _, targets = _probe_rows(backbone, task, train, p)
        if key not in targets[0]:
            raise ConfigError(f"task {task.name}: probe_target {key!r} is not a key of its prepared targets ({sorted(targets[0])})")
        ytr = np.stack([t[key] for t in targets]).astype(np.float64)
        ridge = fit_ridge(xtr, ytr.reshape(len(ytr), -1), std_floor=p.std_floor)
        xte_views, metas = pooled_views(backbone, task, test, p)
        outputs = [{key: torch.from_numpy(ridge.predict(x)).float().view(-1, *ytr.shape[1:])} for x in xte_views]
        preds = task.predict(outputs, metas)
        metrics = task.evaluate(preds, test)
        metrics.update(ridge.info)
        return EvalOutput(metrics, preds)

