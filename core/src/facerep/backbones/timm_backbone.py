"""Any timm ViT or CNN as a facerep :class:`~facerep.protocols.Backbone`.

The model is created by name with ``num_classes=0``; the adapter returns the pooled vector
(``forward_head(pre_logits=True)``: CLS token or global average pool), the last layer's patch
tokens, and, when ``layers`` are configured, intermediate layers through timm's
``forward_intermediates`` (block indices for ViTs, stage indices for CNNs) as ``(B, C, h, w)``
maps, the input of multi-layer feature pyramids (FaRL uses ViT blocks 4/6/8/12, i.e. indices
3, 5, 7, 11).
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Literal

import attrs
import timm
import torch
from torch import nn

from facerep.config import FieldError, each, non_negative, positive
from facerep.errors import ConfigError
from facerep.types import Features

__all__ = ["TimmBackbone", "TimmBackboneParams"]


@attrs.frozen
class TimmBackboneParams:
    """Attributes:
    model: timm model name (``resnet18``, ``resnet50``, ``vit_tiny_patch16_224``, ...).
    img_size: input size for ViTs (position embeddings are sized for it); ignored by CNNs.
    patch_size: override the ViT patch size (e.g. 8 for 64 px faces); None keeps the model's.
    layers: 0-based block (ViT) or stage (CNN) indices returned as intermediate maps.
    drop_path_rate: stochastic depth.
    model_kwargs: anything else ``timm.create_model`` accepts.
    pos_embed_resample: how a ViT with ``dynamic_img_size`` resizes its position embeddings for
        another input size (e.g. 96 px local crops): ``timm`` (bicubic, antialiased) or ``dino``
        (DINO's ``interpolate_pos_encoding``, ``vision_transformer.py:174-195``: bicubic by a scale
        factor of ``(n + 0.1) / n0``, no antialiasing; ProS and LAFS build on DINO's ViT).
    """

    model: str = attrs.field(default="resnet18")
    img_size: int | None = attrs.field(default=None, validator=positive)
    patch_size: int | None = attrs.field(default=None, validator=positive)
    layers: tuple[int, ...] = ()
    drop_path_rate: float = attrs.field(default=0.0, validator=non_negative)
    model_kwargs: dict[str, Any] = attrs.field(factory=dict)
    #: Input normalisation after scaling to [0, 1] (ImageNet statistics by default; FaRL uses CLIP's).
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = attrs.field(default=(0.229, 0.224, 0.225), validator=each(positive))
    pos_embed_resample: Literal["timm", "dino"] = "timm"

    @model.validator
    def _known_model(self, attribute: attrs.Attribute, value: str) -> None:
        problem = _unknown_model(value)
        if problem:
            raise FieldError(problem, field=attribute.name)


_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def _unknown_model(name: str) -> str | None:
    """None when timm knows ``name`` (``arch`` or ``arch.tag``), else a message with close matches."""
    if name.startswith(_HUB_PREFIXES) or timm.is_model(name):
        return None
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
    return f"unknown timm model {name!r}; {hint}"


def _dino_pos_embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's ``VisionTransformer._pos_embed`` with DINO's resampling of the patch positions for
    a grid other than the model's (``x``: ``(B, H, W, C)`` patch tokens under ``dynamic_img_size``)."""
    if not getattr(model, "dynamic_img_size", False):
        return type(model)._pos_embed(model, x)
    b, h, w, c = x.shape
    n_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    pos = model.pos_embed
    h0, w0 = model.patch_embed.grid_size
    if (h, w) != (h0, w0):
        grid = pos[:, n_prefix:].float().reshape(1, h0, w0, c).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, scale_factor=((h + 0.1) / h0, (w + 0.1) / w0), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :n_prefix], grid.permute(0, 2, 3, 1).reshape(1, h * w, c).to(pos.dtype)], dim=1)
    x = x.reshape(b, h * w, c)
    prefix = [t.expand(b, -1, -1) for t in (model.cls_token, getattr(model, "reg_token", None)) if t is not None]
    if model.no_embed_class:
        x = torch.cat([*prefix, x + pos], dim=1)
    else:
        x = torch.cat([*prefix, x], dim=1) + pos
    return model.pos_drop(x)


class TimmBackbone(nn.Module):
    """Wraps ``timm.create_model(params.model)``; ``forward(x) -> Features``."""

    def __init__(self, params: TimmBackboneParams | None = None) -> None:
        super().__init__()
        self.params = params = params or TimmBackboneParams()
        kwargs: dict[str, Any] = dict(params.model_kwargs)
        if params.drop_path_rate:
            kwargs["drop_path_rate"] = params.drop_path_rate
        if params.img_size is not None and _is_vit_like(params.model):
            kwargs["img_size"] = params.img_size
        if params.patch_size is not None:
            kwargs["patch_size"] = params.patch_size
        # pretrained=False always: weights come from facerep checkpoints on disk, never a hub.
        try:
            self.model = timm.create_model(params.model, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as exc:  # e.g. params built with validators off
            if "nknown model" not in str(exc):
                raise
            raise ConfigError(f"backbone.params.model: {_unknown_model(params.model) or exc}") from None
        if params.pos_embed_resample == "dino" and getattr(self.model, "pos_embed", None) is not None:
            # an instance attribute shadows timm's method; a partial survives deepcopy (EMA teachers)
            self.model._pos_embed = functools.partial(_dino_pos_embed, self.model)
        self.embed_dim: int = int(self.model.num_features)
        self.num_prefix_tokens: int = int(getattr(self.model, "num_prefix_tokens", 0))
        self.is_vit = hasattr(self.model, "patch_embed")  # token models: ViT, DeiT, EVA, ...
        scale = torch.tensor(params.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("_mean", torch.tensor(params.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("_scale", scale, persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 -> normalised float32 (done on the device, after augmentation)."""
        return (x.float() - self._mean) / self._scale

    def unpreprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`preprocess`: normalised float -> float in 0-255 units (e.g. to hand a
        reconstruction to another backbone's ``preprocess``)."""
        return x * self._scale + self._mean

    @property
    def layer_dims(self) -> list[int]:
        """Channel count of each configured intermediate layer."""
        info = getattr(self.model, "feature_info", None)
        if self.is_vit or not info:
            return [self.embed_dim] * len(self.params.layers)
        chans = [f["num_chs"] for f in info]
        return [chans[i] for i in self.params.layers]

    def forward_layers(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Only the configured intermediate layers ``(maps, cls_tokens)``, as in :meth:`forward`,
        stopping after the last of them (a frozen feature extractor that needs early layers)."""
        if not self.params.layers:
            raise ConfigError("backbone.params.layers: forward_layers needs at least one layer")
        indices = list(self.params.layers)
        if self.is_vit:
            inter = self.model.forward_intermediates(x, indices=indices, return_prefix_tokens=True, stop_early=True,
                                                     intermediates_only=True)
            return [fmap for fmap, _ in inter], [prefix[:, 0] for _, prefix in inter]
        return list(self.model.forward_intermediates(x, indices=indices, stop_early=True, intermediates_only=True)), []

    def forward(self, x: torch.Tensor) -> Features:
        layers: list[torch.Tensor] = []
        layer_cls: list[torch.Tensor] = []
        if self.params.layers:
            if self.is_vit:
                final, inter = self.model.forward_intermediates(x, indices=list(self.params.layers), return_prefix_tokens=True)
                for fmap, prefix in inter:
                    layers.append(fmap)
                    layer_cls.append(prefix[:, 0])
            else:
                final, layers = self.model.forward_intermediates(x, indices=list(self.params.layers))
        else:
            final = self.model.forward_features(x)
        pooled = self.model.forward_head(final, pre_logits=True)
        if final.ndim == 3:  # (B, N, D) token sequence
            tokens = final[:, self.num_prefix_tokens :]
        else:  # (B, C, h, w) feature map
            tokens = final.flatten(2).transpose(1, 2)
        return Features(pooled=pooled, tokens=tokens, layers=list(layers), layer_cls=layer_cls)


def _is_vit_like(name: str) -> bool:
    return any(key in name for key in ("vit", "deit", "eva", "beit", "swin", "cait", "xcit"))
