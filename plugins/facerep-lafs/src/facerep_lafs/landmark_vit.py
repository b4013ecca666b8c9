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
(the paper's landmark CNN is learned inside a supervised Part fViT and is not public). Deviations:
12 heads of 64 (LAFS's attention is 11 x 64 inside a 768-wide model, which timm's blocks do not
express) and timm's init (LAFS draws the position embeddings from N(0, 1)).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
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
        drop_path_rate, dropout: stochastic depth and dropout (LAFS: 0.1 and 0.1, always on in training).
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
    mlp_ratio: float = attrs.field(default=2048 / 768, validator=positive)
    drop_path_rate: float = attrs.field(default=0.1, validator=in_range(0, 1, hi_inclusive=False))
    dropout: float = attrs.field(default=0.1, validator=in_range(0, 1, hi_inclusive=False))
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
        if p.embed_dim % p.heads:
            raise ConfigError(f"backbone.params.heads: {p.heads} does not divide embed_dim {p.embed_dim}")
        self.embed_dim = p.embed_dim
        self.num_prefix_tokens = 1
        self.is_vit = True
        self.patch_embed = nn.Linear(3 * p.patch * p.patch, p.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, p.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, p.n_landmarks + 1, p.embed_dim))
        self.pos_drop = nn.Dropout(p.dropout)
        rates = torch.linspace(0, p.drop_path_rate, p.depth).tolist()
        self.blocks = nn.Sequential(*[Block(p.embed_dim, p.heads, p.mlp_ratio, qkv_bias=True, proj_drop=p.dropout, drop_path=r)
                                      for r in rates])
        self.norm = nn.LayerNorm(p.embed_dim, eps=1e-6)
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


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
