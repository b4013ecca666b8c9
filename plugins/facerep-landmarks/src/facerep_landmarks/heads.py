"""Landmark heads.

* :class:`HeatmapHead` (FaRL §2.5): core's 4-level feature pyramid over the backbone's layers, a
  light fusion decoder (1x1 projections, upsample-and-add to the finest level, 3x3 conv) giving K
  heatmap logits at stride 4. Landmarks = soft-argmax of the sigmoid heatmaps (expected (x, y) under
  each heatmap normalised by its sum, pixel centres at +0.5). Loss = mean per-point Euclidean
  distance of normalised coordinates + BCE-with-logits against truncated Gaussians (1:1).
  FaRL decodes with mmseg's UPerHead; this decoder is lighter so that frozen-backbone few-shot
  runs fit a CPU (facerep-parsing ships the UPerHead).
* :class:`RegressionHead`: ``Linear(D, 2K)`` on the pooled vector, sigmoid -> normalised points,
  the same point loss (the linear protocol's head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facerep.eval.pyramid import FeaturePyramid
from facerep.eval.task import HeadBase
from facerep.types import Features, LossOutput

__all__ = ["HeatmapHead", "RegressionHead", "gaussian_targets", "point_loss", "soft_argmax"]


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """``(B, K, H, W)`` non-negative maps -> ``(B, K, 2)`` expected (x, y) in [0, 1] (x = (j + 0.5) / W)."""
    b, k, h, w = heatmaps.shape
    p = heatmaps.flatten(2)
    p = p / p.sum(2, keepdim=True).clamp_min(1e-12)
    p = p.view(b, k, h, w)
    xs = (torch.arange(w, dtype=p.dtype, device=p.device) + 0.5) / w
    ys = (torch.arange(h, dtype=p.dtype, device=p.device) + 0.5) / h
    return torch.stack([(p.sum(2) * xs).sum(2), (p.sum(3) * ys).sum(2)], -1)


def gaussian_targets(points: torch.Tensor, h: int, w: int, radius: float) -> torch.Tensor:
    """Gaussians (sigma = radius / 4, zero beyond ``radius`` pixels) at normalised ``points (B, K, 2)``
    on an ``h x w`` grid (FaRL: radius 5 on 128 x 128)."""
    cx = points[..., 0] * w - 0.5  # back to pixel-centre coordinates of this grid
    cy = points[..., 1] * h - 0.5
    xs = torch.arange(w, dtype=points.dtype, device=points.device)
    ys = torch.arange(h, dtype=points.dtype, device=points.device)
    d2 = (xs.view(1, 1, 1, w) - cx[..., None, None]) ** 2 + (ys.view(1, 1, h, 1) - cy[..., None, None]) ** 2
    sigma = radius / 4
    g = torch.exp(-d2 / (2 * sigma * sigma))
    return torch.where(d2 <= radius * radius, g, torch.zeros_like(g))


def point_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over points of the Euclidean distance (FaRL's ``coord_l1_loss``, an L2 norm per point)."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()


class HeatmapHead(HeadBase):
    def __init__(self, in_dims: list[int], n_points: int, *, vit: bool, channels: int = 128, radius: float = 5.0,
                 reference_size: int = 128) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError("HeatmapHead reads the backbone's intermediate layers: configure the backbone's `layers` "
                             "(e.g. backbone_layers: [3, 5, 7, 11] in the evaluate entry)")
        self.pyramid = FeaturePyramid(in_dims, vit=vit)
        self.proj = nn.ModuleList(nn.Conv2d(d, channels, 1) for d in self.pyramid.out_dims)
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.GELU(),
                                  nn.Conv2d(channels, n_points, 1))
        self.radius, self.reference_size = radius, reference_size
        self.select_key = len(in_dims)

    def select(self, features: Features) -> dict[str, torch.Tensor]:
        return {f"layer{i}": x for i, x in enumerate(features.layers)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        levels = self.pyramid([inputs[f"layer{i}"] for i in range(len(self.proj))])
        size = max((x.shape[-2:] for x in levels), key=lambda s: s[0] * s[1])
        fused = sum(F.interpolate(p(x), size=size, mode="bilinear", align_corners=False) for p, x in zip(self.proj, levels, strict=True))
        logits = self.fuse(fused)
        return {"heatmap": logits, "points": soft_argmax(torch.sigmoid(logits.float()))}

    def loss(self, output: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> LossOutput:
        pts = targets["points"].float()
        logits = output["heatmap"].float()
        h, w = logits.shape[-2:]
        # the Gaussian radius scales with the grid: FaRL's 5 px on 128 x 128, at least 1.5 cells
        radius = max(1.5, self.radius * h / self.reference_size)
        hm = F.binary_cross_entropy_with_logits(logits, gaussian_targets(pts, h, w, radius))
        pl = point_loss(output["points"], pts)
        return LossOutput(pl + hm, {"point": float(pl.detach()), "heatmap": float(hm.detach())})


class RegressionHead(HeadBase):
    def __init__(self, dim: int, n_points: int) -> None:
        super().__init__()
        self.n_points = n_points
        self.fc = nn.Linear(dim, 2 * n_points)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)  # starts at the crop centre

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"points": torch.sigmoid(self.fc(inputs["pooled"]).float()).view(-1, self.n_points, 2)}

    def loss(self, output: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> LossOutput:
        pl = point_loss(output["points"], targets["points"].float())
        return LossOutput(pl, {"point": float(pl.detach())})
