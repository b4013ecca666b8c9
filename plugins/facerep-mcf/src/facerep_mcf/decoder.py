"""MAE's decoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, Sec. 3),
the one MCF uses: encoder tokens are embedded to the decoder width, a shared learned mask token
fills every masked position (restoring the patch order), fixed 2-D sine-cosine position embeddings
are added, a few transformer blocks (timm's ``Block``) run, and a linear layer predicts each
patch's ``p * p * 3`` normalised pixels. MCF: 8 blocks, width 512, 16 heads (§3.2 of the brief).

Position tables are MAE's ``get_2d_sincos_pos_embed`` (``util/pos_embed.py:17-57`` of MAE and of
MCF ``bc8706f``), channel for channel: ``[sin x, cos x, sin y, cos y]`` (x the column, y the row;
D/4 frequencies ``10000^(-k / (D/4))`` each), computed in float64 as numpy does, so official
tables compare tensor to tensor (timm's ``build_sincos2d_pos_embed`` orders them
``[sin y, sin x, cos y, cos x]``: the same values, permuted).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ["MAEDecoder", "sincos_pos_embed", "unpatchify"]


def sincos_pos_embed(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine table ``(rows * cols, dim)`` in row-major patch order: the
    first half of the channels encodes the column ``x``, the second the row ``y``, each as
    ``[sin(p w_k), cos(p w_k)]`` with ``w_k = 10000^(-k / (dim / 4))``."""
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    rows, cols = grid
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    y, x = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (x.reshape(-1), y.reshape(-1)):
        angle = pos[:, None] * omega[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


class MAEDecoder(nn.Module):
    def __init__(self, embed_dim: int, grid: tuple[int, int], patch: int, *, width: int = 512, depth: int = 8, heads: int = 16,
                 mlp_ratio: float = 4.0, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        self.grid, self.patch, self.num_prefix_tokens = grid, patch, num_prefix_tokens
        self.embed = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        pos = sincos_pos_embed(grid, width)  # (N, width), fixed as in MAE
        self.register_buffer("pos_embed", torch.cat([torch.zeros(num_prefix_tokens, width), pos]).unsqueeze(0), persistent=False)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)  # MCF's norm_layer partial (models_mcf.py:154,381), as the blocks
        self.pred = nn.Linear(width, patch * patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``latent`` ``(B, prefix + k, D)`` encoder tokens of the visible patches ``keep`` ``(B, k)``
        -> ``(B, N, p * p * 3)`` predictions for every patch, in grid order."""
        p = self.num_prefix_tokens
        h = self.embed(latent)
        b, n, w = h.shape[0], self.grid[0] * self.grid[1], h.shape[-1]
        patches = self.mask_token.to(h.dtype).expand(b, n, w)
        patches = patches.scatter(1, keep.unsqueeze(-1).expand(-1, -1, w), h[:, p:])
        h = torch.cat([h[:, :p], patches], dim=1) + self.pos_embed.to(h.dtype)
        return self.pred(self.norm(self.blocks(h)))[:, p:]


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """``(B, gh * gw, p * p * 3)`` (each patch row-major ``(p, p, 3)``) -> ``(B, 3, gh * p, gw * p)``."""
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, patch, patch, 3)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, 3, gh * patch, gw * patch)
