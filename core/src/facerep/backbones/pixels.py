"""Resized raw pixels as a parameter-free :class:`~facerep.protocols.Backbone` (a baseline).

On the development data a linear probe on 24x24 grey pixels beats pooled random and briefly
pretrained CNN features on FER2013 expression (``notes/science.md``); this backbone makes that
baseline a component like any other, so it runs through the same protocols, caches and reports.

``forward`` returns the image area-averaged to ``size x size`` (grey or RGB): ``pooled`` is that
map flattened to ``(B, C * size * size)``; ``layers`` hold ``(B, C, s, s)`` maps, by default one
(``s = size``). ``layers`` may be configured like a CNN's stages (the evaluation runner's
``backbone_layers`` sets them): level ``i`` is the image at ``max(1, size >> i)`` pixels a side,
a pixel pyramid. There are no weights: the state dict holds only a zero-size, frozen
``anchor`` parameter, there so that protocols can ask ``next(backbone.parameters()).device``.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from facerep.config import each, non_negative, positive
from facerep.types import Features

__all__ = ["PixelBackbone", "PixelsParams"]

#: ITU-R BT.601 luma weights (what OpenCV's RGB->grey uses).
_LUMA = (0.299, 0.587, 0.114)


@attrs.frozen
class PixelsParams:
    """Attributes:
    size: side of the area-averaged pixel map (``pooled`` has ``C * size * size`` values).
    grey: average the RGB channels to one luma channel (C = 1) instead of keeping C = 3.
    layers: pyramid levels returned in ``Features.layers``; level ``i`` is the map at
        ``max(1, size >> i)`` a side. Empty: one level, the ``size x size`` map itself.
    """

    size: int = attrs.field(default=24, validator=positive)
    grey: bool = True
    layers: tuple[int, ...] = attrs.field(default=(), validator=each(non_negative))


class PixelBackbone(nn.Module):
    """``forward(x) -> Features`` of area-resized pixels in [0, 1]; nothing to train."""

    is_vit = False

    def __init__(self, params: PixelsParams | None = None) -> None:
        super().__init__()
        self.params = params = params or PixelsParams()
        self.channels = 1 if params.grey else 3
        self.embed_dim: int = self.channels * params.size * params.size
        # zero-size and frozen: protocols find the device through backbone.parameters()
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.register_buffer("_luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 -> float32 in [0, 1]."""
        return x.float() / 255.0

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(self.params.layers) or (0,)

    @property
    def layer_dims(self) -> list[int]:
        """Channels of each returned layer (1 grey, 3 RGB)."""
        return [self.channels] * len(self.levels)

    def level_size(self, level: int) -> int:
        return max(1, self.params.size >> level)

    def forward(self, x: torch.Tensor) -> Features:
        x = x.float()
        if self.params.grey:
            x = (x * self._luma.to(x.dtype)).sum(1, keepdim=True)
        base = F.adaptive_avg_pool2d(x, self.params.size)  # area interpolation, any input size
        layers = [base if self.level_size(i) == self.params.size else F.adaptive_avg_pool2d(x, self.level_size(i)) for i in self.levels]
        return Features(pooled=base.flatten(1), tokens=None, layers=layers)
