"""AU detection (multi-label occurrence, BCE, F1; spec §6 BP4D) and AU intensity (regression,
MSE, ICC(3,1); spec §6 DISFA) on the pooled face vector."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerep.data.subset import label_array
from facerep.eval.outcomes import ItemOutcomes, moment_terms
from facerep.eval.task import HeadBase, TaskBase, resize_prepared
from facerep.protocols import Backbone, FaceDataset
from facerep.types import LossOutput, Prepared, Sample
from facerep_action_units.metrics import au_f1, intensity_metrics

__all__ = ["AUDetection", "AUIntensity", "AUParams"]


@attrs.frozen
class AUParams:
    input_size: int = 112
    head: Literal["linear", "mlp"] = "mlp"
    hidden: int = 512


class _AUHead(HeadBase):
    def __init__(self, dim: int, n: int, hidden: int | None, regression: bool) -> None:
        super().__init__()
        self.regression = regression
        self.fc = nn.Linear(dim, n) if not hidden else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, n))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(inputs["pooled"])

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        y = targets["aus"].float()
        if self.regression:
            loss = F.mse_loss(output.float(), y)
        else:
            known = (y >= 0).float()  # BP4D's "not coded" entries do not count
            bce = F.binary_cross_entropy_with_logits(output.float(), y.clamp_min(0), reduction="none")
            loss = (bce * known).sum() / known.sum().clamp_min(1)
        return LossOutput(loss, {"loss": float(loss.detach())})


class _AUTask(TaskBase):
    label = "aus"
    higher_is_better = True
    regression = False

    def __init__(self, params: AUParams | None = None) -> None:
        self.params = p = params or AUParams()
        self.input_size = p.input_size

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        return resize_prepared(sample, self.input_size, {"aus": np.asarray(sample.aus, np.float32)})

    def build_head(self, backbone: Backbone, train: FaceDataset, *, linear: bool) -> nn.Module:
        n = label_array(train, "aus").shape[1]
        hidden = None if linear or self.params.head == "linear" else self.params.hidden
        return _AUHead(backbone.embed_dim, n, hidden, self.regression)

    def _names(self, dataset: FaceDataset, n: int) -> tuple[str, ...]:
        return tuple(dataset.info.class_names.get("aus", ())) or tuple(f"AU_{i}" for i in range(n))


class AUDetection(_AUTask):
    name = "au_detection"
    primary_metric = "mean_f1"
    probe_label = None  # BP4D's unknown entries need the masked loss, so the linear mode is a trained head

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        return list((torch.stack([o.float() for o in outputs]).mean(0) > 0).to(torch.int8).numpy())

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        gt = label_array(dataset, "aus")
        return au_f1(np.stack(predictions), gt, self._names(dataset, gt.shape[1]))

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        """Per image and AU: 2 TP over predicted + present (unknown entries count in neither), the
        terms of ``au_f1``'s F1 once summed over images; an AU never predicted nor present scores 0."""
        gt = label_array(dataset, "aus")
        known = gt >= 0
        p, g = (np.stack(predictions) > 0) & known, (gt > 0) & known
        return ItemOutcomes(2.0 * (p & g), p.astype(np.float64) + g, unit="image", empty=0.0)


class AUIntensity(_AUTask):
    name = "au_intensity"
    primary_metric = "mean_icc"
    probe_label = None
    regression = True

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        return list(torch.stack([o.float() for o in outputs]).mean(0).numpy())

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        gt = label_array(dataset, "aus").astype(np.float64)
        return intensity_metrics(np.stack(predictions).astype(np.float64), gt, self._names(dataset, gt.shape[1]))

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        """Per image and AU the moment terms of ICC(3,1) (``mean_icc`` is their statistic, averaged over AUs)."""
        gt = label_array(dataset, "aus").astype(np.float64)
        return ItemOutcomes(moment_terms(np.stack(predictions).astype(np.float64), gt), unit="image", statistic="icc_3_1")
