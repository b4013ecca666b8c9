"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022).

Two augmented views of each face go through the backbone and an MLP *expander*; the loss pulls the
two embeddings together (invariance), keeps every embedding dimension's standard deviation above
``gamma`` over the batch (variance: prevents collapse) and pushes the off-diagonal covariances to
zero (covariance: decorrelates the dimensions). There are no negatives, no momentum encoder and no
stop-gradient.

Follows the authors' reference implementation (``facebookresearch/vicreg``): variance with the
unbiased estimator and ``eps = 1e-4`` inside the square root, covariance normalised by ``N - 1``
and its squared off-diagonal sum divided by the dimension ``D``, both branches summed for the
covariance term and averaged for the variance term; the statistics are taken over the global
batch (embeddings are gathered across processes, gradients flowing back).
"""

from __future__ import annotations

import math

import attrs
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerep.dist import all_gather_with_grad
from facerep.types import LossOutput, Sample

__all__ = ["VICReg", "VICRegParams", "VICRegViews", "vicreg_terms"]

_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _positive(instance: object, attribute: attrs.Attribute, value: object) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if not values or any(v <= 0 for v in values):  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be positive (and non-empty), got {value!r}")


def _probability(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value!r}")


def _scale_range(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    lo, hi = value
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"{attribute.name} must satisfy 0 < low <= high <= 1, got {value!r}")


@attrs.frozen
class VICRegParams:
    """Attributes:
    expander_dims: output sizes of the expander's linear layers (Linear-BN-ReLU between them);
        the paper uses 8192-8192-8192 on ResNet-50.
    sim_coeff, std_coeff, cov_coeff: weights of the invariance, variance and covariance terms
        (lambda, mu, nu in the paper: 25, 25, 1).
    gamma: target standard deviation of every embedding dimension.
    eps: added to the variance before the square root (numerical stability).
    view_size: side of the square views (pixels).
    crop_scale: area range of the random resized crop, as a fraction of the image.
    flip_prob, jitter_prob, grayscale_prob: probabilities of a horizontal flip, of a
        brightness/contrast/saturation jitter and of a conversion to grey.
    jitter_strength: the jitter factors are drawn from ``1 +- jitter_strength``.
    """

    expander_dims: tuple[int, ...] = attrs.field(default=(512, 512, 512), validator=_positive)
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    gamma: float = attrs.field(default=1.0, validator=_positive)
    eps: float = attrs.field(default=1e-4, validator=_positive)
    view_size: int = attrs.field(default=64, validator=_positive)
    crop_scale: tuple[float, float] = attrs.field(default=(0.25, 1.0), validator=_scale_range)
    flip_prob: float = attrs.field(default=0.5, validator=_probability)
    jitter_prob: float = attrs.field(default=0.8, validator=_probability)
    jitter_strength: float = 0.4
    grayscale_prob: float = attrs.field(default=0.2, validator=_probability)

    @classmethod
    def tiny(cls) -> VICRegParams:
        """CPU-sized parameters for tests (the facerep.testing contract suite uses this)."""
        return cls(expander_dims=(32, 32), view_size=32)


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(z_a: torch.Tensor, z_b: torch.Tensor, *, gamma: float = 1.0, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The three VICReg terms for two ``(N, D)`` embedding batches (``N >= 2``).

    Returns ``{"invariance", "variance", "covariance"}`` as scalar tensors (unweighted).
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"expected two (N, D) embeddings of the same shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    n, d = z_a.shape
    if n < 2:
        raise ValueError("VICReg needs at least 2 samples per batch to estimate variances")
    invariance = F.mse_loss(z_a, z_b)
    variance = z_a.new_zeros(())
    covariance = z_a.new_zeros(())
    for z in (z_a, z_b):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + eps)  # unbiased, as in the reference code
        variance = variance + F.relu(gamma - std).mean() / 2
        cov = (z.T @ z) / (n - 1)
        covariance = covariance + _off_diagonal(cov).pow(2).sum() / d
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


class VICRegViews:
    """Two independent views per face: random resized crop, flip, colour jitter, grey.

    All randomness comes from ``rng``; the output is a pair of ``(view_size, view_size, 3)`` uint8
    arrays.
    """

    def __init__(self, params: VICRegParams) -> None:
        self.p = params

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[np.ndarray]:
        return [self._view(sample.image, rng) for _ in range(2)]

    def _view(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.p
        h, w = image.shape[:2]
        area = h * w * rng.uniform(*p.crop_scale)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch = max(1, min(h, round(math.sqrt(area / ratio))))
        cw = max(1, min(w, round(math.sqrt(area * ratio))))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = image[y : y + ch, x : x + cw]
        interp = cv2.INTER_AREA if min(ch, cw) > p.view_size else cv2.INTER_LINEAR
        out = cv2.resize(crop, (p.view_size, p.view_size), interpolation=interp).astype(np.float32)
        if rng.random() < p.flip_prob:
            out = out[:, ::-1]
        if rng.random() < p.jitter_prob:
            s = p.jitter_strength
            brightness, contrast, saturation = rng.uniform(1 - s, 1 + s, size=3)
            out = out * brightness
            out = (out - out.mean()) * contrast + out.mean()
            grey = (out @ _GRAY)[..., None]
            out = (out - grey) * saturation + grey
        if rng.random() < p.grayscale_prob:
            out = np.repeat((out @ _GRAY)[..., None], 3, axis=2)
        return np.ascontiguousarray(np.clip(out, 0, 255).round().astype(np.uint8))


def _expander(in_dim: int, dims: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out_dim in enumerate(dims):
        layers.append(nn.Linear(in_dim, out_dim, bias=i == len(dims) - 1))
        if i < len(dims) - 1:
            layers += [nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]
        in_dim = out_dim
    return nn.Sequential(*layers)


class VICReg(nn.Module):
    """The :class:`facerep.protocols.Objective`: ``VICReg(params, backbone=backbone)``."""

    def __init__(self, params: VICRegParams | None = None, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = params = params or VICRegParams()
        self.backbone = backbone
        self.expander = _expander(int(backbone.embed_dim), params.expander_dims)

    def view_transform(self) -> VICRegViews:
        return VICRegViews(self.params)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.expander(self.backbone(x).pooled)

    def forward(self, views: list[torch.Tensor]) -> LossOutput:
        if len(views) != 2:
            raise ValueError(f"VICReg trains on 2 views, got {len(views)}")
        p = self.params
        # each view on its own, as in the reference code: batch-norm statistics are per view
        z_a = all_gather_with_grad(self.embed(views[0]))
        z_b = all_gather_with_grad(self.embed(views[1]))
        t = vicreg_terms(z_a, z_b, gamma=p.gamma, eps=p.eps)
        loss = p.sim_coeff * t["invariance"] + p.std_coeff * t["variance"] + p.cov_coeff * t["covariance"]
        with torch.no_grad():
            z_std = float(F.normalize(z_a, dim=1).std(dim=0).mean())  # ~1/sqrt(D) healthy, 0 collapsed
        return LossOutput(loss, {**{k: float(v.detach()) for k, v in t.items()}, "z_std": z_std})

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        pass

    def exported_backbone(self) -> nn.Module:
        return self.backbone
