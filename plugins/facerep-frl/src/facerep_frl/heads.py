"""Projection heads on the backbone's pooled vector.

- SwAV (Caron et al. 2020, and Bulat et al. 2022 on ResNet-50): ``Linear(D, hidden) - BN - ReLU -
  Linear(hidden, out)``; a single ``Linear(D, out)`` when ``hidden = 0``.
- MoCo-v2 (Chen et al., arXiv 2003.04297): ``Linear(D, D) - ReLU - Linear(D, out)`` (no BN); MoCo
  (He et al., CVPR 2020) used the linear ``Linear(D, out)`` alone.
"""

from __future__ import annotations

from torch import nn

__all__ = ["projection_mlp"]


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool) -> nn.Sequential:
    """``Linear(in, hidden) [- BN] - ReLU - Linear(hidden, out)``, or ``Linear(in, out)`` if ``hidden_dim == 0``."""
    if hidden_dim <= 0:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    norm: list[nn.Module] = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), *norm, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
