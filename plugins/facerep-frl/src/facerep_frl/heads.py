"""Projection heads on the backbone's pooled vector.

- SwAV (Caron et al. 2020, and Bulat et al. 2022 on ResNet-50): ``Linear(D, hidden) - BN - ReLU -
  Linear(hidden, out)``; a single ``Linear(D, out)`` when ``hidden = 0``.
- MoCo-v2 (Chen et al., arXiv 2003.04297): ``Linear(D, D) - ReLU - Linear(D, out)`` (no BN); MoCo
  (He et al., CVPR 2020) used the linear ``Linear(D, out)`` alone.
- ``out_bn``: a BatchNorm without affine parameters on the output, as MoCo v3's projector ends
  (Chen, Xie & He, ICCV 2021, Sec. 4 "MLP heads"): it centres and scales each batch's embeddings
  per dimension before their L2 normalisation.
"""

from __future__ import annotations

from torch import nn

__all__ = ["projection_mlp"]


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool, out_bn: bool = False) -> nn.Sequential:
    """``Linear(in, hidden) [- BN] - ReLU - Linear(hidden, out) [- BN(no affine)]``, or
    ``Linear(in, out) [- BN(no affine)]`` if ``hidden_dim == 0``."""
    tail: list[nn.Module] = [nn.BatchNorm1d(out_dim, affine=False)] if out_bn else []
    if hidden_dim <= 0:
        return nn.Sequential(nn.Linear(in_dim, out_dim), *tail)
    norm: list[nn.Module] = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), *norm, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim), *tail)
