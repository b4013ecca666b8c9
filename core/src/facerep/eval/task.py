"""Defaults for :class:`~facerep.protocols.Task` and :class:`~facerep.protocols.Head`
implementations: subclass and override what differs (see ``docs/plugin-authoring.md``)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from facerep.protocols import FaceDataset
from facerep.types import Features, Prepared, Sample

__all__ = ["HeadBase", "TaskBase", "resize_prepared"]


class HeadBase(nn.Module):
    """``select`` keeps the pooled vector (override for tokens, layers or CLS tokens)."""

    def select(self, features: Features) -> dict[str, torch.Tensor]:
        return {"pooled": features.pooled}


def resize_prepared(sample: Sample, size: int, target: dict[str, np.ndarray] | None = None) -> Prepared:
    """The whole image resized to ``size`` x ``size``; ``meta["matrix"]`` maps original -> input
    pixel coordinates (pixel-centre convention) so predictions can be mapped back."""
    h, w = sample.image.shape[:2]
    img = sample.image
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    sx, sy = size / w, size / h
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    return Prepared(image=img, target=target or {}, meta={"matrix": m, "size": (h, w), "path": sample.meta.get("path")})


class TaskBase:
    """Defaults: one test view, no stratification or identity groups, nothing to draw."""

    name = "task"
    label = ""
    input_size = 112
    primary_metric = ""
    higher_is_better = True
    probe_label: str | None = None
    probe_target: str | None = None

    def test_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [images]

    def strata(self, dataset: FaceDataset) -> np.ndarray | None:
        return None

    def groups(self, dataset: FaceDataset) -> np.ndarray | None:
        return None

    def draw(self, sample: Sample, prediction: Any) -> np.ndarray | None:
        return None
