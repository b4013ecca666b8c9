"""Binary face attributes (CelebA's 40, LFWA's 40): FaRL's pooled multi-layer head and the mean
accuracy over attributes (FaRL §2.6, spec §2.6).

Head (FacePerceiver/facer ``VITClassificationHeadV0``, re-implemented): for each selected layer, the
global mean of the patch tokens, their global max and the CLS token, each through its own
LayerNorm; the ``3 x L`` vectors are combined by a softmax-normalised learnable weighted sum, then
dropout and ``Linear(D, A)``; sigmoid + BCE. Backbones without CLS tokens (CNNs) use mean and max.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerep.data.geometry import five_points, similarity_matrix, template, warp
from facerep.data.subset import label_array
from facerep.errors import ConfigError
from facerep.eval.label_task import classification_confidence, classification_metrics, classification_outcomes
from facerep.eval.outcomes import ItemOutcomes
from facerep.eval.task import HeadBase, TaskBase, resize_prepared
from facerep.protocols import Backbone, FaceDataset
from facerep.types import Features, LossOutput, Prepared, Sample

__all__ = ["AttributeParams", "FaceAttributes", "PooledAttributeHead"]


@attrs.frozen
class AttributeParams:
    """Attributes:
    input_size: side of the network input.
    head: ``pooled`` (FaRL's weighted mean/max/CLS over the backbone's layers) or ``linear``.
    dropout: before the classifier.
    align: ``none`` (CelebA's aligned crops as they are) or ``facer`` (5-point similarity to
        facer's template when the sample has landmarks).
    flip: random horizontal flip of training images (attributes are flip-invariant).
    """

    input_size: int = 112
    head: Literal["pooled", "linear"] = "pooled"
    dropout: float = 0.0
    align: Literal["none", "facer"] = "none"
    flip: bool = True


class PooledAttributeHead(HeadBase):
    """``select``: (B, K, D) stack of [mean, max, CLS] of each layer (K = 3L, or 2L without CLS)."""

    def __init__(self, dim: int, n_layers: int, has_cls: bool, n_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.per_layer = 3 if has_cls else 2
        k = self.per_layer * max(n_layers, 1)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(k))
        self.weights = nn.Parameter(torch.zeros(k))  # softmax(0) = uniform at the start
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, n_out)
        self.use_layers = n_layers > 0
        self.select_key = (n_layers, has_cls)

    def select(self, features: Features) -> dict[str, torch.Tensor]:
        # without configured layers (or for CNNs, whose stages differ in width): the last layer's tokens
        maps = features.layers if self.use_layers else [features.tokens.transpose(1, 2)[..., None]]
        vecs = []
        for i, m in enumerate(maps):
            flat = m.flatten(2)  # (B, D, h*w)
            vecs += [flat.mean(2), flat.amax(2)]
            if self.per_layer == 3:
                vecs.append(features.layer_cls[i] if features.layer_cls else features.pooled)
        return {"stack": torch.stack(vecs, 1)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["stack"]
        normed = torch.stack([norm(x[:, i]) for i, norm in enumerate(self.norms)], 1)  # (B, K, D)
        fused = (F.softmax(self.weights, 0)[None, :, None] * normed).sum(1)
        return self.fc(self.dropout(fused))

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        loss = F.binary_cross_entropy_with_logits(output, targets["attributes"].float())
        return LossOutput(loss, {"loss": float(loss.detach())})


class _LinearAttributeHead(HeadBase):
    def __init__(self, dim: int, n_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, n_out)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(inputs["pooled"])

    loss = PooledAttributeHead.loss


class FaceAttributes(TaskBase):
    name = "attributes"
    label = "attributes"
    probe_label = "attributes"
    primary_metric = "mean_acc"
    higher_is_better = True

    def __init__(self, params: AttributeParams | None = None) -> None:
        self.params = p = params or AttributeParams()
        self.input_size = p.input_size

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        if sample.attributes is None:
            raise ConfigError(f"{sample.meta.get('path', '?')}: no attribute labels")
        target = {"attributes": np.asarray(sample.attributes, np.uint8)}
        s = self.input_size
        if self.params.align == "facer" and sample.landmarks is not None:
            m = similarity_matrix(five_points(sample.landmarks), template("facer", s))
            prep = Prepared(warp(sample.image, m, s), target, {"matrix": m, "path": sample.meta.get("path")})
        else:
            prep = resize_prepared(sample, s, target)
        if train and self.params.flip and rng.random() < 0.5:
            prep.image = np.ascontiguousarray(prep.image[:, ::-1])
        return prep

    def build_head(self, backbone: Backbone, train: FaceDataset, *, linear: bool) -> nn.Module:
        y = label_array(train, "attributes")
        n_out = y.shape[1] if y is not None else len(train.info.class_names.get("attributes", ()))
        if linear or self.params.head == "linear":
            return _LinearAttributeHead(backbone.embed_dim, n_out)
        self.names = tuple(train.info.class_names.get("attributes", ()))
        is_vit = bool(getattr(backbone, "is_vit", False))
        n_layers = len(getattr(getattr(backbone, "params", None), "layers", ()) or ()) if is_vit else 0
        return PooledAttributeHead(backbone.embed_dim, n_layers, is_vit, n_out, self.params.dropout)

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        logits = torch.stack([o.float() for o in outputs]).mean(0)
        return list((logits > 0).to(torch.uint8).numpy())

    def confidence(self, outputs: list[Any], metas: list[dict]) -> list[float]:
        return classification_confidence(outputs, multilabel=True)

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        y = label_array(dataset, "attributes")
        return classification_metrics(np.stack(predictions).astype(np.uint8), y, dataset.info.class_names.get("attributes", ()))

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        """Per image and attribute: right or wrong (``mean_acc`` is their mean)."""
        return classification_outcomes(np.stack(predictions).astype(np.uint8), label_array(dataset, "attributes"))

    def draw(self, sample: Sample, prediction: Any) -> np.ndarray:
        """The face with its predicted-present attributes: green when right, red when wrong."""
        img = np.ascontiguousarray(cv2.resize(sample.image, (192, round(192 * sample.image.shape[0] / sample.image.shape[1]))))
        names = getattr(self, "names", ()) or tuple(str(i) for i in range(len(prediction)))
        for row, i in enumerate([i for i in range(len(prediction)) if prediction[i]][:10]):
            ok = sample.attributes is not None and sample.attributes[i] == prediction[i]
            cv2.putText(img, names[i][:18], (3, 12 + 12 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 0) if ok else (255, 0, 0), 1)
        return img
