"""Classification of one label field, the task behind ``evaluate: [{label: expression, ...}]``
entries that name no task plugin: whole image resized, single-label (class id) or multi-label (0/1
vector) targets, a linear head on the pooled vector, accuracy metrics.

Face tasks with their own geometry, heads and metrics come from task plugins; this one is generic
machinery, the same for any labelled dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerep.data.subset import label_array
from facerep.errors import ConfigError
from facerep.eval.outcomes import ItemOutcomes
from facerep.eval.task import HeadBase, TaskBase, resize_prepared
from facerep.protocols import Backbone, FaceDataset
from facerep.types import LossOutput, Prepared, Sample

__all__ = ["LabelTask", "LinearHead", "classification_confidence", "classification_metrics", "classification_outcomes"]


class LinearHead(HeadBase):
    """``Linear(D, n_out)`` on the pooled vector; softmax CE (single label) or BCE (multi-label)."""

    def __init__(self, dim: int, n_out: int, *, multilabel: bool, hidden: int | None = None) -> None:
        super().__init__()
        self.multilabel = multilabel
        self.fc = nn.Linear(dim, n_out) if not hidden else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, n_out))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(inputs["pooled"])

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        y = targets["y"]
        loss = F.binary_cross_entropy_with_logits(output, y.float()) if self.multilabel else F.cross_entropy(output, y.long())
        return LossOutput(loss, {"loss": float(loss.detach())})


def classification_confidence(outputs: list[Any], *, multilabel: bool) -> list[float]:
    """Confidence of each prediction from the views' logits (self-distillation's threshold): the
    softmax maximum, or for multi-label outputs the mean over labels of max(p, 1 - p)."""
    logits = torch.stack([o.float() for o in outputs]).mean(0)
    if multilabel:
        p = torch.sigmoid(logits)
        return torch.maximum(p, 1 - p).mean(1).tolist()
    return torch.softmax(logits, 1).max(1).values.tolist()


def classification_metrics(pred: np.ndarray, y: np.ndarray, class_names: tuple[str, ...] = ()) -> dict[str, float]:
    """Single label: ``acc``, ``mean_class_acc`` and ``acc_<class>``; multi-label 0/1: ``mean_acc``
    (mean over columns) and ``acc_<column>``."""
    if y.ndim == 2:
        per = (pred == y).mean(0)
        names = class_names if len(class_names) == y.shape[1] else tuple(str(i) for i in range(y.shape[1]))
        return {"mean_acc": float(per.mean()), **{f"acc_{n}": float(a) for n, a in zip(names, per, strict=True)}}
    out = {"acc": float((pred == y).mean())}
    per_class = {}
    for c in np.unique(y):
        name = class_names[c] if c < len(class_names) else str(c)
        per_class[f"acc_{name}"] = float((pred[y == c] == c).mean())
    out["mean_class_acc"] = float(np.mean(list(per_class.values())))
    out.update(per_class)
    return out


def classification_outcomes(pred: np.ndarray, y: np.ndarray, primary: str = "acc") -> ItemOutcomes:
    """Per image: right or wrong (``acc``); per image and class (``mean_class_acc``: a column per
    class, ``den`` marks the images of that class); per image and column for multi-label ``mean_acc``."""
    pred, y = np.asarray(pred), np.asarray(y)
    correct = (pred == y).astype(np.float64)
    if y.ndim == 2 or primary != "mean_class_acc":
        return ItemOutcomes(correct, unit="image")
    classes = np.unique(y)
    member = (y[:, None] == classes[None, :]).astype(np.float64)
    return ItemOutcomes(member * correct[:, None], member, unit="image")


class LabelTask(TaskBase):
    """Classify ``label`` (a :class:`Sample` field) from the whole image resized to ``input_size``."""

    def __init__(self, label: str, train: FaceDataset, input_size: int | None = None) -> None:
        self.label = self.probe_label = self.name = label
        self.input_size = input_size or 0
        y = label_array(train, label)
        if y is None:
            raise ConfigError(f"dataset {train.info.name}: label {label!r} is not annotated on every sample")
        self.multilabel = y.ndim == 2
        self.n_out = y.shape[1] if self.multilabel else max(int(y.max()) + 1, len(train.info.class_names.get(label, ())))
        self.primary_metric = "mean_acc" if self.multilabel else "acc"

    def _target(self, sample: Sample) -> np.ndarray:
        value = sample.label(self.label)
        if value is None:
            raise ConfigError(f"{sample.meta.get('path', '?')}: label {self.label!r} is not annotated")
        return np.asarray(value)

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        size = self.input_size or sample.image.shape[0]
        return resize_prepared(sample, size, {"y": self._target(sample)})

    def build_head(self, backbone: Backbone, train: FaceDataset, *, linear: bool) -> nn.Module:
        return LinearHead(backbone.embed_dim, self.n_out, multilabel=self.multilabel, hidden=None if linear else 4 * backbone.embed_dim)

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        logits = torch.stack([o.float() for o in outputs]).mean(0)
        pred = (logits > 0).long() if self.multilabel else logits.argmax(1)
        return list(pred.numpy())

    def confidence(self, outputs: list[Any], metas: list[dict]) -> list[float]:
        return classification_confidence(outputs, multilabel=self.multilabel)

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        y = label_array(dataset, self.label)
        return classification_metrics(np.stack(predictions), y, dataset.info.class_names.get(self.label, ()))

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        return classification_outcomes(np.stack(predictions), label_array(dataset, self.label), self.primary_metric)

    def strata(self, dataset: FaceDataset) -> np.ndarray | None:
        y = label_array(dataset, self.label)
        return y if y is not None and y.ndim == 1 else None
