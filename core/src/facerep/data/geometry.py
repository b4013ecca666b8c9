"""Face geometry: 5-point similarity alignment to standard templates, landmark/box crops, and the
inverse mapping of predictions back to the original image (metrics are computed there).

Every transform is a ``(2, 3)`` float64 affine matrix ``M`` mapping original pixel coordinates to
output pixel coordinates (``cv2.warpAffine`` convention, pixel centres at integer coordinates).
Landmarks follow the same convention: 0-based ``(x, y)`` with the first pixel's centre at (0, 0).
"""

from __future__ import annotations

import cv2
import numpy as np

from facerep.errors import DataError

__all__ = [
    "ARCFACE_112",
    "FACER_UNIT",
    "TEMPLATES",
    "box_crop_matrix",
    "five_points",
    "invert_affine",
    "landmark_box",
    "similarity_matrix",
    "template",
    "transform_points",
    "warp",
]

#: InsightFace / ArcFace 112x112 recognition template (left eye, right eye, nose tip, left and
#: right mouth corner; "left" = image left). Values are the standard published template.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64
)

#: FacePerceiver/facer's standard face points (FaRL's 224/448 alignment, §2.6), published on a
#: 512 canvas as (196, 226), (316, 226), (256, 286), (220, 360.4), (292, 360.4); kept here on the
#: unit square (divided by 512) so the template scales to any crop size.
FACER_UNIT = np.array([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]], dtype=np.float64) / 512.0

TEMPLATES = {"arcface": (ARCFACE_112, 112), "facer": (FACER_UNIT, 1)}


def template(name: str, size: int) -> np.ndarray:
    """Five template points for a ``size`` x ``size`` crop (``arcface`` scales 112 -> size)."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown alignment template {name!r}; choose one of {', '.join(TEMPLATES)}")
    pts, ref = TEMPLATES[name]
    return pts * (size / ref)


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` onto ``dst``
    (Umeyama 1991, closed form). Both ``(K, 2)``, K >= 2. Returns ``(2, 3)``.

    Hand-written rather than ``cv2.estimateAffinePartial2D``: that one is a robust (RANSAC/LMEDS)
    estimator, which for five exact correspondences may drop points; alignment wants the plain
    least-squares solution every face-recognition pipeline uses.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity_matrix needs two (K, 2) arrays with K >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply ``(2, 3)`` ``m`` to ``(..., 2)`` points."""
    pts = np.asarray(points, np.float64)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def warp(image: np.ndarray, m: np.ndarray, size: int | tuple[int, int], *, nearest: bool = False,
         border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Warp an image (or a class-index mask with ``nearest=True``) to ``size`` (square or (w, h))."""
    wh = (size, size) if isinstance(size, int) else tuple(size)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(image, np.asarray(m, np.float64), wh, flags=interp, borderMode=border, borderValue=0)


def landmark_box(points: np.ndarray) -> np.ndarray:
    """``(x0, y0, x1, y1)`` of the points."""
    pts = np.asarray(points, np.float64)
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])


def box_crop_matrix(box: np.ndarray, size: int, *, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0),
                    rotation: float = 0.0) -> np.ndarray:
    """Square crop around ``box`` ``(x0, y0, x1, y1)``: the longer side times ``scale`` maps to
    ``size`` pixels; optional rotation (radians, about the box centre) and shift (fraction of the
    crop side), as used for landmark-aware crops and their random augmentation (FaRL §2.5)."""
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    side = max(x1 - x0, y1 - y0) * scale
    if side <= 0:
        raise ValueError(f"degenerate face box {box}")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    s = size / side
    c, n = np.cos(rotation) * s, np.sin(rotation) * s
    m = np.array([[c, n, 0.0], [-n, c, 0.0]])
    # centre of the box goes to the centre of the crop (pixel-centre convention), plus the shift
    out_c = np.array([(size - 1) / 2 + shift[0] * size, (size - 1) / 2 + shift[1] * size])
    m[:, 2] = out_c - m[:, :2] @ np.array([cx, cy])
    return m


#: Indices of (left eye, right eye, nose tip, left mouth corner, right mouth corner) per scheme;
#: an eye is the mean of its listed points. 0-based, image-left first.
FIVE_POINT_INDICES: dict[str, tuple[tuple[int, ...], ...]] = {
    "68": ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,)),
    "98": ((96,), (97,), (54,), (76,), (82,)),
    "106": ((104,), (105,), (54,), (84,), (90,)),  # LaPa (FaRL §2.5)
    "5": ((0,), (1,), (2,), (3,), (4,)),
}


def five_points(landmarks: np.ndarray, scheme: str | None = None) -> np.ndarray:
    """The five alignment points from a landmark set of a known scheme (by count if not given)."""
    pts = np.asarray(landmarks, np.float64)
    scheme = scheme or str(len(pts))
    if scheme not in FIVE_POINT_INDICES:
        raise DataError(f"no 5-point rule for a {len(pts)}-point landmark scheme ({scheme!r}); known: {', '.join(FIVE_POINT_INDICES)}")
    need = max(max(g) for g in FIVE_POINT_INDICES[scheme]) + 1
    if len(pts) < need:
        raise DataError(f"landmark scheme {scheme!r} needs {need} points, got {len(pts)}")
    return np.stack([pts[list(g)].mean(0) for g in FIVE_POINT_INDICES[scheme]]).astype(np.float32)
