"""Backbones: the ``core.timm`` adapter, raw pixels, ViT masking helpers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["pooled_by_size"]


def pooled_by_size(backbone: Any, views: Sequence[Any]) -> Any:
    """Pooled features of every view, ``(V * B, D)`` in view order, with one backbone call per run of
    consecutive same-size views (multi-crop: the globals in one call, the locals in another)."""
    import torch

    return torch.cat([backbone(torch.cat(list(group))).pooled for _, group in itertools.groupby(views, key=lambda v: v.shape[-2:])])
