"""AU metrics.

* F1 per AU on 0/1 occurrences (entries marked unknown, < 0, are ignored) and the mean over AUs.
* ICC(3,1) (Shrout & Fleiss 1979: two-way mixed, consistency, single rater) between prediction and
  ground truth as two "raters" (k = 2) over the n frames: ``(BMS - EMS) / (BMS + (k - 1) EMS)``
  with BMS the between-frames mean square and EMS the residual mean square; the DISFA protocol's
  intensity metric. MSE beside it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["au_f1", "icc_3_1", "intensity_metrics"]


def au_f1(pred: np.ndarray, gt: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for j, name in enumerate(names):
        known = gt[:, j] >= 0
        p, g = pred[known, j] > 0, gt[known, j] > 0
        tp, fp, fn = (p & g).sum(), (p & ~g).sum(), (~p & g).sum()
        out[f"f1_{name}"] = float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 0.0
    out["mean_f1"] = float(np.mean([out[f"f1_{n}"] for n in names]))
    return out


def icc_3_1(a: np.ndarray, b: np.ndarray) -> float:
    """ICC(3,1) of two ratings of the same n targets."""
    y = np.stack([np.asarray(a, np.float64), np.asarray(b, np.float64)], 1)  # (n, k)
    n, k = y.shape
    grand = y.mean()
    bms = k * ((y.mean(1) - grand) ** 2).sum() / (n - 1)
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + grand
    ems = (resid**2).sum() / ((n - 1) * (k - 1))
    denom = bms + (k - 1) * ems
    return float((bms - ems) / denom) if denom > 0 else 0.0


def intensity_metrics(pred: np.ndarray, gt: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for j, name in enumerate(names):
        out[f"icc_{name}"] = icc_3_1(pred[:, j], gt[:, j])
        out[f"mse_{name}"] = float(((pred[:, j] - gt[:, j]) ** 2).mean())
    out["mean_icc"] = float(np.mean([out[f"icc_{n}"] for n in names]))
    out["mean_mse"] = float(np.mean([out[f"mse_{n}"] for n in names]))
    return out
