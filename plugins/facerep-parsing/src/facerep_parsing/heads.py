"""Parsing heads.

* :class:`UPerParsingHead` (FaRL §0.2): core's 4-level feature pyramid over the backbone's layers,
  then mmsegmentation's ``UPerHead`` (pool scales 1, 2, 3, 6, dropout 0.1, align_corners False;
  BatchNorm here where FaRL uses SyncBN on 8 GPUs); logits upsampled bilinearly to the input
  size; pixel-wise cross-entropy.
* :class:`LinearParsingHead`: a 1x1 convolution on the last layer's patch grid (the linear probe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facerep.eval.pyramid import FeaturePyramid
from facerep.eval.task import HeadBase
from facerep.types import Features, LossOutput

__all__ = ["LinearParsingHead", "UPerParsingHead", "build_uperhead", "upsample_bilinear"]


def build_uperhead(in_channels: list[int], channels: int, num_classes: int) -> nn.Module:
    from facerep_parsing.mmcv_compat import install

    install()
    from mmengine.registry import DefaultScope
    from mmseg.models.decode_heads import UPerHead

    # UPerHead builds its loss through the registry of the *current* default scope; an mmengine
    # Runner (e.g. a pretraining run in the same process) leaves that at "mmengine", where mmseg's
    # losses are not registered.
    with DefaultScope.overwrite_default_scope("mmseg"):
        return UPerHead(in_channels=list(in_channels), in_index=list(range(len(in_channels))), pool_scales=(1, 2, 3, 6),
                        channels=channels, dropout_ratio=0.1, num_classes=num_classes, norm_cfg={"type": "BN", "requires_grad": True},
                        align_corners=False)


class _Parsing(HeadBase):
    size: int

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        loss = F.cross_entropy(output.float(), targets["mask"].long())
        return LossOutput(loss, {"loss": float(loss.detach())})

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        return upsample_bilinear(logits, self.size)


def _interp_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1-D bilinear resizing, taken from ``F.interpolate`` itself (each
    column resizes a unit vector), so the convention (align_corners False, edge clamping) is its own."""
    eye = torch.eye(n_in, dtype=torch.float32, device=like.device)[None, :, :, None]
    return F.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=False)[0, :, :, 0].T.to(like.dtype)


def upsample_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.interpolate(x, (size, size), mode="bilinear", align_corners=False)`` as two matrix
    products (bilinear resizing is separable): the same values up to float rounding, and on a CPU
    3-5x faster forward + backward (PyTorch's upsample backward scatters per output pixel; from a
    2x2 linear-probe grid to 64x64 it was 60 % of a parsing head's training step)."""
    h, w = x.shape[-2:]
    return _interp_matrix(h, size, x) @ x @ _interp_matrix(w, size, x).T


class UPerParsingHead(_Parsing):
    def __init__(self, in_dims: list[int], num_classes: int, size: int, *, vit: bool, channels: int = 128) -> None:
        super().__init__()
        if len(in_dims) != 4:
            raise ValueError(f"UPerParsingHead reads 4 backbone layers (FaRL: ViT blocks 4/6/8/12), the backbone gives {len(in_dims)}: "
                             "set backbone_layers in the evaluate entry")
        self.size = size
        self.pyramid = FeaturePyramid(in_dims, vit=vit)
        self.decode = build_uperhead(self.pyramid.out_dims, channels, num_classes)
        self.select_key = len(in_dims)

    def select(self, features: Features) -> dict[str, torch.Tensor]:
        return {f"layer{i}": x for i, x in enumerate(features.layers)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._upsample(self.decode(self.pyramid([inputs[f"layer{i}"] for i in range(4)])))


class LinearParsingHead(_Parsing):
    def __init__(self, dim: int, num_classes: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(dim, num_classes, 1)

    def select(self, features: Features) -> dict[str, torch.Tensor]:
        if features.layers:
            return {"grid": features.layers[-1]}
        b, n, d = features.tokens.shape
        side = round(n**0.5)
        return {"grid": features.tokens.transpose(1, 2).reshape(b, d, side, n // side)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._upsample(self.conv(inputs["grid"]))
