"""Multi-layer feature pyramid for dense heads (FaRL §0.2, reused by MCF).

Four ViT layers (FaRL: blocks 4/6/8/12, 0-based indices 3, 5, 7, 11), all at stride 16, become
strides 4, 8, 16 and 32 through per-level adapters: ConvTranspose x2 -> BatchNorm -> GELU ->
ConvTranspose x2; ConvTranspose x2; identity; MaxPool /2. CNN stages already form a pyramid and
pass through unchanged. Only the adapters hold weights; the backbone may stay frozen.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeaturePyramid"]


class FeaturePyramid(nn.Module):
    """``forward(list of (B, C_i, h, w)) -> list of maps``; ``out_dims`` are the output channels.

    ``vit=True`` with four layers applies FaRL's adapters (x4, x2, x1, x0.5); with another count
    the layers are used as they are (a single-scale "pyramid").
    """

    def __init__(self, in_dims: list[int], *, vit: bool) -> None:
        super().__init__()
        self.out_dims = list(in_dims)
        if vit and len(in_dims) == 4:
            d = in_dims
            self.adapters = nn.ModuleList([
                nn.Sequential(nn.ConvTranspose2d(d[0], d[0], 2, 2), nn.BatchNorm2d(d[0]), nn.GELU(), nn.ConvTranspose2d(d[0], d[0], 2, 2)),
                nn.ConvTranspose2d(d[1], d[1], 2, 2),
                nn.Identity(),
                nn.MaxPool2d(2, 2),
            ])
        else:
            self.adapters = nn.ModuleList([nn.Identity() for _ in in_dims])

    def forward(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(layers) != len(self.adapters):
            raise ValueError(f"feature pyramid built for {len(self.adapters)} layers, got {len(layers)} (set the backbone's `layers`)")
        return [adapter(x) for adapter, x in zip(self.adapters, layers, strict=True)]
