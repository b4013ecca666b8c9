"""Patch masks and masked forward passes of a facerep ViT backbone, for masked-image-modelling
objectives (MAE-style token dropping, BEiT-style mask tokens).

Masks are drawn in numpy from the view transform's ``rng`` (so they travel as view extras, API 1.2,
and a resumed run draws the same ones); ``True`` marks a *masked* patch, in the row-major order of
the backbone's patch grid.

- :func:`random_mask`: exactly ``round(ratio * n)`` patches chosen uniformly (MAE, He et al. 2022,
  Sec. 3: "random sampling" without replacement; MCF uses ratio 0.75).
- :func:`block_mask`: BEiT's blockwise masking (Bao et al. 2022, Algorithm 1): rectangles of random
  area (at least ``min_block`` patches) and aspect ratio in ``[0.3, 1/0.3]`` until the budget is
  used; here the count is exact (the last patches are drawn at random when no block fits).
- :func:`vit_tokens`: the backbone's token sequence after its final norm, either with the masked
  patches *dropped* (``keep``: MAE's encoder sees only visible tokens) or *replaced* by a learnable
  mask embedding before the position embedding is added (``mask`` + ``mask_token``: BEiT/FaRL).

These reach into timm's ``VisionTransformer`` (``patch_embed``, ``_pos_embed``, ``blocks``, ``norm``)
because timm has no public masked forward for it; they run the same modules in the same order as
its ``forward_features``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from facerep.errors import ConfigError

__all__ = ["block_mask", "keep_indices", "random_mask", "vit_grid", "vit_tokens"]


def random_mask(rng: np.random.Generator, n: int, ratio: float) -> np.ndarray:
    """``(n,)`` bool with exactly ``round(ratio * n)`` True (masked) entries, uniformly placed."""
    masked = np.zeros(n, dtype=bool)
    masked[rng.permutation(n)[: round(ratio * n)]] = True
    return masked


def block_mask(rng: np.random.Generator, grid: tuple[int, int], ratio: float, *, min_block: int = 4,
               aspect: tuple[float, float] = (0.3, 1 / 0.3), tries: int = 10) -> np.ndarray:
    """``(h * w,)`` bool, BEiT blockwise: exactly ``round(ratio * h * w)`` masked patches."""
    h, w = grid
    target = round(ratio * h * w)
    mask = np.zeros((h, w), dtype=bool)
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    while mask.sum() < target:
        left = target - int(mask.sum())
        added = 0
        for _ in range(tries):  # BEiT: a block of s in [min_block, left] patches, aspect r
            s = rng.uniform(min(min_block, left), left)
            r = math.exp(rng.uniform(*log_aspect))
            bh, bw = round(math.sqrt(s * r)), round(math.sqrt(s / r))
            if not (0 < bh <= h and 0 < bw <= w):
                continue
            top, lft = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            block = mask[top : top + bh, lft : lft + bw]
            new = int((~block).sum())
            if 0 < new <= left:
                block[...] = True
                added = new
                break
        if not added:  # no block fits the remaining budget: finish with single random patches
            free = np.flatnonzero(~mask.ravel())
            mask.ravel()[rng.choice(free, size=left, replace=False)] = True
    return mask.ravel()


def keep_indices(mask: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` bool mask with the same count per row -> ``(B, n_visible)`` ascending indices of
    the visible patches."""
    visible = (~mask).sum(1)
    if not bool((visible == visible[0]).all()):
        raise ValueError("every sample of a batch must have the same number of visible patches")
    return torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, : int(visible[0])]


def _vit(backbone: nn.Module) -> nn.Module:
    model = getattr(backbone, "model", None)
    if not getattr(backbone, "is_vit", False) or not all(hasattr(model, a) for a in ("patch_embed", "_pos_embed", "blocks", "norm")):
        raise ConfigError(f"backbone: masked image modelling needs a timm ViT backbone (core.timm with a vit_* model), got "
                          f"{type(getattr(backbone, 'model', backbone)).__name__}")
    if getattr(model, "dynamic_img_size", False):
        raise ConfigError("backbone.params.model_kwargs.dynamic_img_size: not supported with patch masking; set img_size instead")
    return model


def vit_grid(backbone: nn.Module) -> tuple[int, int]:
    """The ``(rows, cols)`` patch grid of a facerep ViT backbone at its configured image size."""
    return tuple(int(g) for g in _vit(backbone).patch_embed.grid_size)  # type: ignore[return-value]


def vit_tokens(backbone: nn.Module, x: torch.Tensor, *, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None, final_norm: bool = True) -> torch.Tensor:
    """Run a facerep ViT backbone on ``x`` (normalised ``(B, 3, H, W)``) and return its final,
    normed tokens ``(B, prefix + n, D)`` (prefix: CLS and register tokens); ``final_norm=False``:
    the last block's raw output (the residual stream; ``model.norm`` of it gives the normed tokens).

    ``keep`` ``(B, k)``: indices of the only patches the blocks see (MAE); ``n = k``.
    ``mask`` ``(B, N)`` bool + ``mask_token`` ``(D,)``: masked patch embeddings are replaced by
    ``mask_token`` before the position embedding (BEiT); ``n = N``.
    """
    model = _vit(backbone)
    t = model.patch_embed(x)
    if mask is not None:
        if mask_token is None:
            raise ValueError("vit_tokens: mask needs a mask_token")
        m = mask.unsqueeze(-1).to(t.dtype)
        t = t * (1 - m) + mask_token.to(t.dtype) * m
    t = model._pos_embed(t)
    if keep is not None:
        p = model.num_prefix_tokens
        patches = torch.gather(t[:, p:], 1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        t = torch.cat([t[:, :p], patches], dim=1)
    t = model.blocks(model.norm_pre(model.patch_drop(t)))
    return model.norm(t) if final_norm else t
