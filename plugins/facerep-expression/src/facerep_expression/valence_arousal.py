"""Valence and arousal regression (AffectNet's continuous labels, both in [-1, 1]), beside the
categorical task, scored the way the affect literature reports it (Kossaifi et al., "AFEW-VA",
IVC 2017; Toisoul et al., "Estimation of continuous valence and arousal levels from faces in
naturalistic conditions", Nature Machine Intelligence 2021):

- CCC, Lin's concordance correlation coefficient (Lin 1989, eq. 2):
  ``2 cov(y, p) / (var y + var p + (mean y - mean p)^2)`` with population moments;
- PCC, Pearson's correlation; RMSE;
- SAGR, sign agreement: the fraction of samples whose prediction has the sign of the label.

Each per dimension (``valence_*``, ``arousal_*``); the primary metric is the mean CCC. The head is a
linear map (or an MLP) to two values squashed by tanh; the loss is the mean squared error plus
``1 - CCC`` per dimension over the batch (Toisoul et al. train on a sum of such terms; CCC alone
ignores the scale of a batch with little spread, MSE alone the correlation).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np
import torch
from torch import nn

from facerep.data.subset import label_array
from facerep.errors import DataError
from facerep.eval.outcomes import ItemOutcomes, moment_terms
from facerep.eval.task import HeadBase, TaskBase, resize_prepared
from facerep.protocols import Backbone, FaceDataset
from facerep.types import LossOutput, Prepared, Sample
from facerep_expression.task import face_view

__all__ = ["ValenceArousal", "ValenceArousalHead", "ValenceArousalParams", "affect_metrics", "ccc"]

DIMENSIONS = ("valence", "arousal")


def ccc(y: np.ndarray | torch.Tensor, p: np.ndarray | torch.Tensor) -> Any:
    """Concordance correlation coefficient along axis 0 (numpy or torch, differentiable)."""
    my, mp = y.mean(0), p.mean(0)
    vy, vp = ((y - my) ** 2).mean(0), ((p - mp) ** 2).mean(0)
    cov = ((y - my) * (p - mp)).mean(0)
    return 2 * cov / (vy + vp + (my - mp) ** 2 + 1e-12)


def affect_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``pred``, ``y``: ``(N, 2)`` valence, arousal. CCC, PCC, RMSE and SAGR per dimension and ``ccc`` (their mean CCC)."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    out: dict[str, float] = {}
    for j, name in enumerate(DIMENSIONS):
        p, t = pred[:, j], y[:, j]
        sp, st = p.std(), t.std()
        out[f"{name}_ccc"] = float(ccc(t, p))
        out[f"{name}_pcc"] = float(((p - p.mean()) * (t - t.mean())).mean() / (sp * st)) if sp > 0 and st > 0 else 0.0
        out[f"{name}_rmse"] = float(np.sqrt(((p - t) ** 2).mean()))
        out[f"{name}_sagr"] = float((np.sign(p) == np.sign(t)).mean())
    out["ccc"] = (out["valence_ccc"] + out["arousal_ccc"]) / 2
    return out


class ValenceArousalHead(HeadBase):
    """Pooled vector -> ``tanh`` of a linear map (or an MLP) to (valence, arousal)."""

    def __init__(self, dim: int, *, hidden: int | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2) if not hidden else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 2))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tanh(self.fc(inputs["pooled"]).float())

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        y = targets["va"].float()
        mse = ((output - y) ** 2).mean()
        c = ccc(y, output)  # (2,) over the batch
        loss = mse + (1 - c).mean()
        return LossOutput(loss, {"mse": float(mse.detach()), "ccc_valence": float(c[0].detach()), "ccc_arousal": float(c[1].detach())})


@attrs.frozen
class ValenceArousalParams:
    """Attributes:
    input_size: side of the network input (the whole face crop resized).
    head: ``mlp`` or ``linear``; hidden: the MLP's width.
    crop_scale, flip: training augmentation (random square crop of this side fraction; mirror,
        which keeps valence and arousal).
    """

    input_size: int = 112
    head: Literal["mlp", "linear"] = "mlp"
    hidden: int = 512
    crop_scale: tuple[float, float] = (0.8, 1.0)
    flip: bool = True


def va_array(dataset: FaceDataset) -> np.ndarray:
    """``(N, 2)`` valence, arousal of every sample: the reader's ``label_array("valence_arousal")``
    when it has one (AffectNet's list), else each sample's ``meta["valence"]``, ``meta["arousal"]``."""
    fast = label_array(dataset, "valence_arousal") if hasattr(dataset, "label_array") else None
    if fast is not None:
        return np.asarray(fast, np.float32)
    rows = []
    for i in range(len(dataset)):
        meta = dataset[i].meta
        if "valence" not in meta or "arousal" not in meta:
            raise DataError(f"{dataset.info.name}: sample {i} ({meta.get('path', '?')}) has no valence/arousal (readers that keep "
                            f"them: expression.affectnet)")
        rows.append((meta["valence"], meta["arousal"]))
    return np.asarray(rows, np.float32)


class ValenceArousal(TaskBase):
    name = "valence_arousal"
    label = "expression"  # the field AffectNet-style readers carry; the targets themselves are in meta / label_array
    probe_label = None
    #: the linear probe fits ridge regression of (valence, arousal) in closed form
    probe_target = "va"
    primary_metric = "ccc"
    higher_is_better = True

    def __init__(self, params: ValenceArousalParams | None = None) -> None:
        self.params = p = params or ValenceArousalParams()
        self.input_size = p.input_size

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        if "valence" not in sample.meta or "arousal" not in sample.meta:
            raise DataError(f"{sample.meta.get('path', '?')}: no valence/arousal")
        target = {"va": np.array([sample.meta["valence"], sample.meta["arousal"]], np.float32)}
        if not train:
            return resize_prepared(sample, self.input_size, target)
        return face_view(sample, target, rng, self.input_size, self.params.crop_scale, self.params.flip)

    def head_spec(self, train: FaceDataset) -> dict[str, Any]:
        return {}

    def build_head(self, backbone: Backbone, train: FaceDataset | None, *, linear: bool, spec: dict[str, Any] | None = None) -> nn.Module:
        return ValenceArousalHead(backbone.embed_dim, hidden=None if linear or self.params.head == "linear" else self.params.hidden)

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        outs = [(o["va"] if isinstance(o, dict) else o).float() for o in outputs]  # the probe hands {"va": ...}
        return list(torch.stack(outs).mean(0).clamp(-1, 1).numpy())

    def pseudo_label(self, sample: Sample, prediction: np.ndarray) -> Sample:
        """Self-distillation: the teacher's (valence, arousal) replace the sample's own, which the
        few-shot split hides (they live in ``meta``, where ``prepare`` reads them)."""
        sample.meta["valence"], sample.meta["arousal"] = (float(v) for v in np.asarray(prediction).reshape(2))
        return sample

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        return affect_metrics(np.stack(predictions), va_array(dataset))

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        """Per face and dimension the moment terms of the CCC (``ccc`` is their statistic, averaged
        over valence and arousal)."""
        return ItemOutcomes(moment_terms(np.stack(predictions).astype(np.float64), va_array(dataset).astype(np.float64)),
                            unit="face", statistic="ccc")
