"""``lafs.landmark_vit``: a ViT whose tokens are patches at facial landmarks (LAFS's fViT / Part
fViT, Sun & Tzimiropoulos, BMVC 2022; Sun et al., CVPR 2024; ``specs/methods.md`` §5.3-5.4).

Tokens: an 8 x 8 patch bilinearly sampled at each landmark (:func:`~facerep_lafs.patches.landmark_patches`),
flattened and linearly embedded; a CLS token; **learnable** position embeddings assigned by sequence
index (a view with N tokens uses the first N + 1), so a local view's random landmark subset loses
the landmark <-> position link, as in the official code. Then pre-norm transformer blocks (timm's
``Block``) and a final LayerNorm; ``pooled`` is the CLS token.

``forward_points(x, points)`` is what LAFS pretraining calls (points from the data loader).
``forward(x)`` (every facerep task and protocol) first finds the landmarks of each image with the
configured landmarker, frozen, on the uint8 image: this is Part fViT with an external landmarker
(the paper's landmark CNN is learned inside a supervised Part fViT and is not public).

The defaults are a standard timm ViT block. The official ``ViT_face`` details are options, all set by
the paper preset (``lafs/lafs_vit_b16_paper``; official ``face_pre_pro/ViT_face.py`` at 320c57d):
``heads: 11, head_dim: 64`` (attention width 704 inside a 768-wide model, ``:141-147``),
``attention_scale: embed_dim`` (logits scaled by ``768^-0.5``, not ``64^-0.5``, ``:145``),
``qkv_bias: false`` (``:147``), ``layer_norm_eps: 1e-5`` (``nn.LayerNorm`` defaults, ``:117, 624``),
``drop_path_schedule: constant`` (0.1 on every residual: ``Residual_droppath``'s default, ``:106-112, 200-201``) and
``init: lafs`` (position and CLS embeddings ``torch.randn``, ``:611, 613``; every Linear with
PyTorch's default init, the module applies none). With these and weights copied, the official
model and this one compute the same function (``tests/test_official_reference.py``); the patch
token layout differs only by a fixed permutation of the embedding's input columns.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, trunc_normal_
from timm.models.vision_transformer import Attention, Block
from torch import nn

from facerep.config import in_range, non_negative, positive
from facerep.errors import ConfigError
from facerep.types import Features
from facerep_lafs.patches import landmark_patches

__all__ = ["LandmarkViT", "LandmarkViTParams"]


@attrs.frozen
class LandmarkViTParams:
    """Defaults: LAFS's fViT-B over dlib's 68 points at 112 px.

    Attributes:
        n_landmarks: tokens of a full view (the position embeddings: n_landmarks + 1).
        patch: side of the patch sampled at each landmark (px).
        input_size: faces are resized to this side before landmarks and patches are taken.
        embed_dim, depth, heads, mlp_ratio: the transformer (LAFS: 768, 12, 11 x 64, 2048 / 768).
        head_dim: width of one attention head (None: ``embed_dim // heads``; LAFS: 64 with 11 heads,
            so the attention works in 704 dimensions inside a 768-wide model).
        attention_scale: attention logits ``q.k`` times ``head_dim^-0.5`` (``head_dim``: standard) or
            ``embed_dim^-0.5`` (``embed_dim``: LAFS's code, ``dim ** -0.5``, 3.5x softer at 768 / 64).
        qkv_bias: a bias on the query / key / value projection (LAFS: none).
        layer_norm_eps: every LayerNorm's epsilon (timm's ViT 1e-6; LAFS: PyTorch's default 1e-5).
        drop_path_rate, dropout: stochastic depth and dropout (LAFS: 0.1 and 0.1, always on in training).
        drop_path_schedule: ``linear``: 0 at the first block to ``drop_path_rate`` at the last (timm /
            DeiT); ``constant``: ``drop_path_rate`` on every block (LAFS's ``Residual_droppath``).
        init: ``timm``: truncated normal (std 0.02) for position / CLS embeddings and every Linear,
            zero biases; ``lafs``: LAFS's code: ``N(0, 1)`` position and CLS embeddings, PyTorch's
            default init for every Linear (uniform +-1/sqrt(fan_in), biases too).
        mean, std: input normalisation after scaling to [0, 1] (LAFS: 0.5 / 0.5).
        landmarker: for ``forward(images)``: ``{source: dlib68, upsample: 1}`` or ``{source: model,
            path: .../model.safetensors, start_box: [0.2, 0.25, 0.8, 0.85]}`` (the same source the pretraining data's landmarks came from).
    """

    n_landmarks: int = attrs.field(default=68, validator=positive)
    patch: int = attrs.field(default=8, validator=positive)
    input_size: int = attrs.field(default=112, validator=positive)
    embed_dim: int = attrs.field(default=768, validator=positive)
    depth: int = attrs.field(default=12, validator=positive)
    heads: int = attrs.field(default=12, validator=positive)
    head_dim: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive))
    mlp_ratio: float = attrs.field(default=2048 / 768, validator=positive)
    attention_scale: Literal["head_dim", "embed_dim"] = "head_dim"
    qkv_bias: bool = True
    layer_norm_eps: float = attrs.field(default=1e-6, validator=positive)
    drop_path_rate: float = attrs.field(default=0.1, validator=in_range(0, 1, hi_inclusive=False))
    drop_path_schedule: Literal["linear", "constant"] = "linear"
    dropout: float = attrs.field(default=0.1, validator=in_range(0, 1, hi_inclusive=False))
    init: Literal["timm", "lafs"] = "timm"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    landmarker: dict[str, Any] = attrs.field(factory=lambda: {"source": "dlib68", "upsample": 1})
    layers: tuple[int, ...] = attrs.field(default=(), validator=attrs.validators.deep_iterable(non_negative))

    @classmethod
    def tiny(cls) -> LandmarkViTParams:
        return cls(n_landmarks=8, patch=4, input_size=32, embed_dim=32, depth=2, heads=2, mlp_ratio=2.0, drop_path_rate=0.0, dropout=0.0)


class LandmarkViT(nn.Module):
    def __init__(self, params: LandmarkViTParams | None = None) -> None:
        super().__init__()
        self.params = p = params or LandmarkViTParams()
        if p.head_dim is None and p.embed_dim % p.heads:
            raise ConfigError(f"backbone.params.heads: {p.heads} does not divide embed_dim {p.embed_dim} (or set head_dim)")
        self.embed_dim = p.embed_dim
        self.num_prefix_tokens = 1
        self.is_vit = True
        self.patch_embed = nn.Linear(3 * p.patch * p.patch, p.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, p.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, p.n_landmarks + 1, p.embed_dim))
        self.pos_drop = nn.Dropout(p.dropout)
        if p.drop_path_schedule == "constant":
            rates = [p.drop_path_rate] * p.depth
        else:
            rates = torch.linspace(0, p.drop_path_rate, p.depth).tolist()
        norm = functools.partial(LayerNorm, eps=p.layer_norm_eps)
        head_dim = p.head_dim or p.embed_dim // p.heads
        scale = (p.embed_dim if p.attention_scale == "embed_dim" else head_dim) ** -0.5
        timm_attention = head_dim * p.heads == p.embed_dim and p.attention_scale == "head_dim"
        blocks = []
        for r in rates:
            # timm's Block builds a standard attention (heads must divide the width); LAFS's replaces it
            block = Block(p.embed_dim, p.heads if timm_attention else 1, p.mlp_ratio, qkv_bias=p.qkv_bias, proj_drop=p.dropout,
                          drop_path=r, norm_layer=norm)
            if not timm_attention:
                block.attn = _ScaledAttention(p.embed_dim, p.heads, head_dim, scale=scale, qkv_bias=p.qkv_bias, proj_drop=p.dropout)
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm(p.embed_dim)
        if p.init == "lafs":  # ViT_face.py:611-613 (torch.randn); its Linears keep PyTorch's default init
            nn.init.normal_(self.pos_embed)
            nn.init.normal_(self.cls_token)
        else:
            trunc_normal_(self.pos_embed, std=0.02)
            trunc_normal_(self.cls_token, std=0.02)
            self.apply(_init)
        self.register_buffer("_mean", torch.tensor(p.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("_scale", torch.tensor(p.std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.__dict__["_landmarker"] = None  # built on first use; not a module, not in the state dict

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups for timm's layer-wise lr decay (``core.finetune``'s ``layer_decay``), as timm's
        ViT: the token embedding at ``decay^depth``, block ``i`` at ``decay^(depth - 1 - i)``, the
        final norm with the last block (LAFS §5.7 gives the last block one more factor 0.58)."""
        return {"stem": r"^cls_token|^pos_embed|^patch_embed", "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]}

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @property
    def layer_dims(self) -> list[int]:
        return [self.embed_dim] * len(self.params.layers)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self._mean) / self._scale

    def unpreprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._scale + self._mean

    def forward_points(self, x: torch.Tensor, points: torch.Tensor) -> Features:
        """``x`` normalised ``(B, 3, H, W)``, ``points`` ``(B, N, 2)`` pixel ``(x, y)`` in ``x``,
        ``N <= n_landmarks``."""
        n = points.shape[1]
        if n > self.params.n_landmarks:
            raise ValueError(f"{n} landmarks, the model has position embeddings for {self.params.n_landmarks}")
        tokens = self.patch_embed(landmark_patches(x, points, self.params.patch))
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos_embed[:, : n + 1]
        tokens = self.pos_drop(tokens)
        layers, layer_cls = [], []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in self.params.layers:
                layer_cls.append(tokens[:, 0])
        tokens = self.norm(tokens)
        return Features(pooled=tokens[:, 0], tokens=tokens[:, 1:], layers=layers, layer_cls=layer_cls)

    def landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """Landmarks of normalised images ``x`` by the configured landmarker, ``(B, n_landmarks, 2)``."""
        if self._landmarker is None:
            from facerep_lafs.landmarks import build_landmarker

            self.__dict__["_landmarker"] = build_landmarker(self.params.landmarker)
        images = self.unpreprocess(x.detach().float()).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        if hasattr(self._landmarker, "predict"):  # a trained landmarks model: the whole batch at once
            return torch.from_numpy(self._landmarker.predict(list(images))).to(x.device)
        pts = []
        for img in images:  # dlib works one image at a time
            p, _ = self._landmarker(img)
            pts.append(p)
        return torch.from_numpy(np.stack(pts)).to(x.device)

    def forward(self, x: torch.Tensor) -> Features:
        if x.shape[-1] != self.params.input_size or x.shape[-2] != self.params.input_size:
            x = torch.nn.functional.interpolate(x, size=(self.params.input_size,) * 2, mode="bilinear", align_corners=False,
                                                antialias=True)
        return self.forward_points(x, self.landmarks(x))


class _ScaledAttention(Attention):
    """timm's multi-head self-attention with a free head width and logit scale (LAFS's ``Attention``,
    ``ViT_face.py:140-182``: ``heads x head_dim`` may differ from ``dim``, logits times ``dim^-0.5``).
    Same parameter names as timm's (``qkv``, ``proj``), so state dicts look alike."""

    def __init__(self, dim: int, heads: int, head_dim: int, *, scale: float, qkv_bias: bool, proj_drop: float) -> None:
        super().__init__(dim, num_heads=heads, attn_head_dim=head_dim, qkv_bias=qkv_bias, proj_drop=proj_drop)
        self.scale = scale

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, self.attn_dim)))


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
