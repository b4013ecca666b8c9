"""AFLW2000-3D and 300W-LP fixtures written in the released layouts (MATLAB v5 .mat files beside
JPEGs), from synthetic faces whose 68 landmarks match their pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.io import savemat

from facerep.data.synthetic import SyntheticFaces

YAWS = (5.0, -20.0, 45.0, -50.0, 75.0, -95.0)  # degrees: two faces per bin, one beyond 90


def depth(points: np.ndarray) -> np.ndarray:
    """A smooth made-up depth: nearer at the centre of the face."""
    c = points.mean(0)
    return 100.0 - 0.02 * ((points - c) ** 2).sum(1)


def write_aflw2000(root: Path, n: int = 6, size: int = 64) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    faces = SyntheticFaces(n=n, size=size, seed=7)
    for i in range(n):
        s = faces[i]
        name = f"image{i:05d}"
        cv2.imwrite(str(root / f"{name}.jpg"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        xy = s.landmarks.astype(np.float64) + 1.0  # MATLAB 1-based
        pt3d = np.stack([xy[:, 0], xy[:, 1], depth(s.landmarks)])  # (3, 68)
        pose = np.array([[0.1, np.radians(YAWS[i % len(YAWS)]), -0.05, 30.0, 40.0, 0.0, 0.001]])
        savemat(str(root / f"{name}.mat"), {"pt3d_68": pt3d, "Pose_Para": pose, "Shape_Para": np.zeros((199, 1)),
                                            "Exp_Para": np.zeros((29, 1)), "pt2d": xy[:21].T, "roi": np.array([[0, 0, size, size]])})
    return root


def write_300w_lp(root: Path, n: int = 4, size: int = 64) -> Path:
    faces = SyntheticFaces(n=n, size=size, seed=8)
    for subset in ("AFW", "HELEN"):
        (root / subset).mkdir(parents=True, exist_ok=True)
        (root / "landmarks" / subset).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = faces[i]
        subset = "AFW" if i % 2 == 0 else "HELEN"
        name = f"{subset}_{100 + i}_1_0"
        cv2.imwrite(str(root / subset / f"{name}.jpg"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        pose = np.array([[0.0, np.radians(YAWS[i]), 0.0, 10.0, 20.0, 0.0, 0.001]])
        savemat(str(root / subset / f"{name}.mat"), {"Pose_Para": pose, "Shape_Para": np.ones((199, 1)), "Exp_Para": np.zeros((29, 1)),
                                                      "pt2d": s.landmarks.T + 1.0})
        savemat(str(root / "landmarks" / subset / f"{name}_pts.mat"), {"pts_2d": s.landmarks + 1.0, "pts_3d": s.landmarks + 1.0})
    return root
