"""Landmark patches (LAFS, Sun et al., CVPR 2024, ``specs/methods.md`` §5.3): a ``p x p`` patch
centred at each landmark, sampled bilinearly from the image, flattened into one token.

Coordinates are facerep's pixel-centre convention (pixel ``i`` spans ``[i - 0.5, i + 0.5]``), so
``grid_sample(align_corners=False)`` takes ``u_norm = (2 u + 1) / W - 1``. The patch's sample points
sit at offsets ``k - (p - 1) / 2`` (``k = 0 .. p - 1``) around the landmark: for ``p = 8`` and an
integer landmark, half-pixel positions, as the official code's ``p / 56 - 1`` mapping of a 112 px
face gives. Outside the image, patches read zeros (``padding_mode="zeros"``, as the official code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["landmark_patches"]


def landmark_patches(images: torch.Tensor, points: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """``images`` ``(B, C, H, W)``, ``points`` ``(B, L, 2)`` pixel ``(x, y)`` -> ``(B, L, C * patch * patch)``
    tokens, each flattened channel-major (``C, row, column``) like a ViT's patch embedding input."""
    b, c, h, w = images.shape
    offsets = torch.arange(patch, device=images.device, dtype=torch.float32) - (patch - 1) / 2
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")  # (p, p): row, column offsets
    pts = points.float()
    x = pts[..., 0, None, None] + dx  # (B, L, p, p)
    y = pts[..., 1, None, None] + dy
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)  # (B, L, p, p, 2)
    grid = grid.view(b, -1, patch, 2).to(images.dtype)  # (B, L * p, p, 2): L patches stacked as rows
    sampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, L * p, p)
    return sampled.view(b, c, -1, patch, patch).permute(0, 2, 1, 3, 4).reshape(b, -1, c * patch * patch)
