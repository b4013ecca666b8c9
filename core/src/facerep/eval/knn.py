"""k-NN probe on frozen features (Wu et al. 2018; DINO's weighted vote): cosine similarity,
the k nearest training samples vote with weight exp(sim / T)."""

from __future__ import annotations

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from facerep.eval.features import extract_splits
from facerep.protocols import Backbone, FaceDataset

__all__ = ["KNNParams", "KNNProbe", "knn_predict"]


@attrs.frozen
class KNNParams:
    k: int = 20
    temperature: float = 0.07
    image_size: int | None = None
    batch_size: int = 256
    num_workers: int = 0
    precision: str = "fp32"


def knn_predict(train: np.ndarray, y: np.ndarray, test: np.ndarray, k: int, temperature: float, chunk: int = 1024) -> np.ndarray:
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
        preds.append((votes > 0.5).long() if multilabel else votes.argmax(1))
    return torch.cat(preds).numpy()


class KNNProbe:
    name = "knn"

    def __init__(self, params: KNNParams | None = None) -> None:
        self.params = params or KNNParams()

    def run(self, backbone: Backbone, train: FaceDataset, test: FaceDataset, label: str) -> dict[str, float]:
        p = self.params
        xtr, ytr, xte, yte = extract_splits(backbone, train, test, label, p)
        pred = knn_predict(xtr, ytr, xte, p.k, p.temperature)
        if ytr.ndim == 2:
            return {"mean_acc": float((pred == yte).mean()), "k": float(p.k)}
        return {"acc": float((pred == yte).mean()), "k": float(p.k)}
