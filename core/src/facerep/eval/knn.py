"""k-NN probe on frozen features (Wu et al. 2018; DINO's weighted vote): cosine similarity,
the k nearest training samples vote with weight exp(sim / T)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from facerep.data.subset import label_array
from facerep.errors import ConfigError
from facerep.protocols import Backbone, FaceDataset, Task

__all__ = ["KNNParams", "KNNProbe", "knn_predict"]


@attrs.frozen
class KNNParams:
    k: int = 20
    temperature: float = 0.07
    image_size: int | None = None
    batch_size: int = 256
    num_workers: int = 0
    precision: str = "fp32"
    device: str = "auto"


def knn_predict(train: np.ndarray, y: np.ndarray, test: np.ndarray, k: int, temperature: float, chunk: int = 1024) -> np.ndarray:
    votes = knn_votes(train, y, test, k, temperature, chunk)
    return (votes > 0.5).astype(np.int64) if y.ndim == 2 else votes.argmax(1)


def knn_votes(train: np.ndarray, y: np.ndarray, test: np.ndarray, k: int, temperature: float, chunk: int = 1024) -> np.ndarray:
    """Single-label ``y (N,)`` -> class ids; multi-label ``y (N, A)`` in {0,1} -> 0/1 per column."""
    xtr = F.normalize(torch.from_numpy(train).float(), dim=1)
    xte = F.normalize(torch.from_numpy(test).float(), dim=1)
    multilabel = y.ndim == 2
    targets = torch.from_numpy(y).float() if multilabel else F.one_hot(torch.from_numpy(y).long(), int(y.max()) + 1).float()
    k = min(k, len(xtr))
    preds = []
    for start in range(0, len(xte), chunk):
        sim, idx = (xte[start : start + chunk] @ xtr.T).topk(k, dim=1)  # (b, k)
        w = (sim / temperature).exp()
        votes = (w.unsqueeze(-1) * targets[idx]).sum(1) / w.sum(1, keepdim=True)  # (b, C)
        preds.append(votes)
    return torch.cat(preds).numpy()


class KNNProbe:
    """k-NN on pooled features for tasks with a ``probe_label`` (the votes are handed to
    ``task.predict`` as scores: class votes, or vote share - 0.5 per attribute)."""

    name = "knn"

    def __init__(self, params: KNNParams | None = None) -> None:
        self.params = params or KNNParams()

    def run(self, backbone: Backbone, task: Task | str, train: FaceDataset, test: FaceDataset, val: FaceDataset | None = None) -> Any:
        from facerep.eval.label_task import LabelTask
        from facerep.eval.linear_probe import pooled_views
        from facerep.eval.protocols import EvalOutput, resolve_device

        p = self.params
        if isinstance(task, str):
            task = LabelTask(task, train, p.image_size)
        if task.probe_label is None:
            raise ConfigError(f"protocol knn needs a classification task (task {task.name} has no probe_label)")
        backbone.to(resolve_device(p.device))
        ytr = label_array(train, task.probe_label)
        (xtr, *_), _ = pooled_views(backbone, task, train, p)
        xte_views, metas = pooled_views(backbone, task, test, p)
        scores = [torch.from_numpy(knn_votes(xtr, ytr, x, p.k, p.temperature)) for x in xte_views]
        if ytr.ndim == 2:
            scores = [s - 0.5 for s in scores]
        preds = task.predict(scores, metas)
        metrics = task.evaluate(preds, test)
        metrics["k"] = float(p.k)
        return EvalOutput(metrics, preds)
