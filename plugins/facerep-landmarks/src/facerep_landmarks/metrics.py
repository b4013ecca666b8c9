"""Landmark metrics in the original image coordinates (spec §2.5, FaRL's scorers).

NME per image = mean over points of ||pred - gt||_2 / d, with d one of
``inter_ocular`` / ``inter_pupil`` (see :mod:`facerep_landmarks.schemes`), ``box`` = sqrt(w * h)
and ``diagonal`` = sqrt(w^2 + h^2) of the ground-truth landmark box (or a given face box).
FR@t = share of images with NME > t; AUC@t = area under the cumulative error distribution on
[0, t], divided by t, integrated with Simpson's rule at step 1e-4 (as FaRL's WFLW scorer).
"""

from __future__ import annotations

import numpy as np

from facerep_landmarks.schemes import OCULAR, PUPIL, eye_distance

__all__ = ["auc_fr", "landmark_metrics", "nme", "normaliser"]


def normaliser(gt: np.ndarray, kind: str, scheme: str, boxes: np.ndarray | None = None) -> np.ndarray:
    """``(N,)`` normalising distances for ``gt (N, K, 2)``."""
    if kind in ("inter_ocular", "inter_pupil"):
        table = OCULAR if kind == "inter_ocular" else PUPIL
        if scheme not in table:
            raise ValueError(f"no {kind} rule for the {scheme}-point scheme (known: {', '.join(table)})")
        return eye_distance(gt, table[scheme])
    if boxes is None:
        lo, hi = gt.min(1), gt.max(1)
        w, h = (hi - lo).T
    else:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if kind == "box":
        return np.sqrt(w * h)
    if kind == "diagonal":
        return np.sqrt(w * w + h * h)
    raise ValueError(f"unknown NME normaliser {kind!r}")


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Per-image NME ``(N,)``."""
    return np.linalg.norm(pred - gt, axis=2).mean(1) / norm


def auc_fr(errors: np.ndarray, threshold: float, step: float = 1e-4) -> tuple[float, float]:
    """(AUC@threshold, FR@threshold) of per-image errors."""
    errors = np.asarray(errors, np.float64)
    n = round(threshold / step)
    n += n % 2  # Simpson needs an even number of intervals
    x = np.linspace(0.0, threshold, n + 1)
    ced = (errors[None, :] <= x[:, None]).mean(1)
    h = x[1] - x[0]
    area = h / 3 * (ced[0] + ced[-1] + 4 * ced[1:-1:2].sum() + 2 * ced[2:-1:2].sum())
    return float(area / threshold), float((errors > threshold).mean())


def landmark_metrics(pred: np.ndarray, gt: np.ndarray, scheme: str, threshold: float = 0.1, primary: str = "inter_ocular",
                     boxes: np.ndarray | None = None) -> dict[str, float]:
    """Mean NME under every normaliser the scheme supports, plus AUC/FR for ``primary``."""
    out: dict[str, float] = {}
    for kind in ("inter_ocular", "inter_pupil", "box", "diagonal"):
        try:
            d = normaliser(gt, kind, scheme, boxes if kind in ("box", "diagonal") else None)
        except ValueError:
            continue
        e = nme(pred, gt, d)
        out[f"nme_{kind}"] = float(e.mean())
        if kind == primary:
            out[f"auc@{threshold:g}"], out[f"fr@{threshold:g}"] = auc_fr(e, threshold)
    return out
