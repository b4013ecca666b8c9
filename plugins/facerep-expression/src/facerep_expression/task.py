"""Expression classification (spec §7.1 T4): the whole aligned face resized, a linear or MLP head,
overall accuracy, per-class accuracy and the mean class accuracy (AffectNet's balanced-validation
number)."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import cv2
import numpy as np
import torch
from torch import nn

from facerep.data.subset import label_array
from facerep.eval.label_task import LinearHead, classification_confidence, classification_metrics, classification_outcomes
from facerep.eval.outcomes import ItemOutcomes
from facerep.eval.task import TaskBase, resize_prepared
from facerep.protocols import Backbone, FaceDataset
from facerep.types import Prepared, Sample

__all__ = ["ExpressionClassification", "ExpressionParams"]


@attrs.frozen
class ExpressionParams:
    """Attributes:
    input_size: side of the network input.
    head: ``mlp`` (Linear-GELU-Linear, ``hidden`` wide) or ``linear`` for the frozen/fine-tune protocols.
    crop_scale: training augmentation: random square crop keeping this fraction of the side range,
        then resize, plus horizontal flip (expressions are flip-invariant).
    """

    input_size: int = 112
    head: Literal["mlp", "linear"] = "mlp"
    hidden: int = 512
    crop_scale: tuple[float, float] = (0.8, 1.0)
    flip: bool = True


def face_view(sample: Sample, target: dict[str, Any], rng: np.random.Generator, size: int, crop_scale: tuple[float, float],
              flip: bool) -> Prepared:
    """A training view of a whole-face image: a random square crop of ``crop_scale`` of the shorter
    side, mirrored with probability 1/2 when ``flip`` (expressions and affect are mirror-invariant),
    resized to ``size``."""
    img = sample.image
    h, w = img.shape[:2]
    side = round(min(h, w) * rng.uniform(*crop_scale))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    img = img[y0 : y0 + side, x0 : x0 + side]
    if flip and rng.random() < 0.5:
        img = img[:, ::-1]
    img = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_LINEAR)
    return Prepared(img, target, {"path": sample.meta.get("path")})


class ExpressionClassification(TaskBase):
    name = "expression"
    label = "expression"
    probe_label = "expression"
    primary_metric = "acc"
    higher_is_better = True

    def __init__(self, params: ExpressionParams | None = None) -> None:
        self.params = p = params or ExpressionParams()
        self.input_size = p.input_size

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        target = {"y": np.int64(sample.expression)}
        if train:
            return face_view(sample, target, rng, self.input_size, self.params.crop_scale, self.params.flip)
        return resize_prepared(sample, self.input_size, target)

    def build_head(self, backbone: Backbone, train: FaceDataset, *, linear: bool) -> nn.Module:
        y = label_array(train, "expression")
        n = max(len(train.info.class_names.get("expression", ())), int(y.max()) + 1 if y is not None else 0)
        hidden = None if linear or self.params.head == "linear" else self.params.hidden
        return LinearHead(backbone.embed_dim, n, multilabel=False, hidden=hidden)

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        return list(torch.stack([o.float() for o in outputs]).mean(0).argmax(1).numpy())

    def confidence(self, outputs: list[Any], metas: list[dict]) -> list[float]:
        return classification_confidence(outputs, multilabel=False)

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        return classification_metrics(
            np.asarray(predictions), label_array(dataset, "expression"), dataset.info.class_names.get("expression", ())
        )

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        return classification_outcomes(np.asarray(predictions), label_array(dataset, "expression"), self.primary_metric)

    def strata(self, dataset: FaceDataset) -> np.ndarray | None:
        return label_array(dataset, "expression")
