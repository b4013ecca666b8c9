"""Face-parsing scores (FaRL's protocol, spec §2.5/§6): a confusion matrix summed over the whole
test set in the original image geometry, then per-class F1 = 2TP / (2TP + FP + FN) and the mean
over the foreground classes (background excluded; classes absent from both ground truth and
prediction are left out of the mean)."""

from __future__ import annotations

import numpy as np

__all__ = ["confusion", "parsing_metrics"]


def confusion(pred: np.ndarray, gt: np.ndarray, n: int) -> np.ndarray:
    """``(n, n)`` counts, rows = ground truth, columns = prediction."""
    idx = gt.astype(np.int64).ravel() * n + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n * n).reshape(n, n)


def parsing_metrics(cm: np.ndarray, class_names: tuple[str, ...], background: int = 0) -> dict[str, float]:
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    out = {f"f1_{class_names[c]}": float(f1[c]) for c in range(len(f1)) if not np.isnan(f1[c])}
    fg = [f1[c] for c in range(len(f1)) if c != background and not np.isnan(f1[c])]
    out["mean_f1"] = float(np.mean(fg)) if fg else float("nan")
    out["pixel_acc"] = float(tp.sum() / max(cm.sum(), 1))
    return out
