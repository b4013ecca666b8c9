"""3D face alignment metrics as 3DDFA (Zhu et al., CVPR 2016, §6) and the papers after it report
them on AFLW2000-3D: NME of the 68 landmarks' image-plane (x, y) positions, normalised by the
size of the ground-truth landmark box, ``sqrt(w * h)``, per absolute-yaw bin ``[0, 30]``,
``(30, 60]``, ``(60, 90]`` degrees (beyond 90 counts in the last bin, as 3DDFA's script does), and
the mean of the three bins (the headline number: 3.42 % for FRL's SwAV weights, Bulat et al. 2022).
``nme_3d`` adds depth when the ground truth has it: both depths are centred per face first (a
relative depth has no origin).
"""

from __future__ import annotations

import numpy as np

from facerep_landmarks.metrics import nme, normaliser

__all__ = ["YAW_BINS", "face3d_metrics", "yaw_bin"]

YAW_BINS = ((0, 30), (30, 60), (60, 90))


def yaw_bin(yaw_deg: np.ndarray) -> np.ndarray:
    """0, 1 or 2 per face by its absolute yaw."""
    a = np.abs(np.asarray(yaw_deg, np.float64))
    return np.where(a <= 30, 0, np.where(a <= 60, 1, 2))


def face3d_metrics(pred: np.ndarray, gt: np.ndarray, yaw_deg: np.ndarray) -> dict[str, float]:
    """``pred``, ``gt``: ``(N, 68, 3)`` (or ``(N, 68, 2)``) in image pixels; ``yaw_deg``: ``(N,)``."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    norm = normaliser(gt[..., :2], "box", "68")
    per_face = nme(pred[..., :2], gt[..., :2], norm)
    bins = yaw_bin(yaw_deg)
    out: dict[str, float] = {"nme_all": float(per_face.mean())}
    means = []
    for b, (lo, hi) in enumerate(YAW_BINS):
        chosen = per_face[bins == b]
        out[f"n_yaw_{lo}_{hi}"] = float(len(chosen))
        out[f"nme_yaw_{lo}_{hi}"] = float(chosen.mean()) if len(chosen) else float("nan")
        if len(chosen):
            means.append(chosen.mean())
    out["nme_mean"] = float(np.mean(means))  # over the bins that have faces
    if pred.shape[-1] == 3 and gt.shape[-1] == 3 and not np.isnan(gt[..., 2]).any():
        p3, g3 = pred.copy(), gt.copy()
        p3[..., 2] -= p3[..., 2].mean(1, keepdims=True)
        g3[..., 2] -= g3[..., 2].mean(1, keepdims=True)
        out["nme_3d"] = float(nme(p3, g3, norm).mean())
    return out
