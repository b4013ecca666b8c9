"""Landmark schemes: flip pairs and the points each NME normaliser uses (0-based; spec §2.5).

inter_ocular = distance of the outer eye corners (300-W 36/45, WFLW 60/72, AFLW-19 6/11; for
5-point sets the eye centres 0/1); inter_pupil = distance of the eye centres (300-W: mean of 36-41
and of 42-47; WFLW 96/97; AFLW-19 7/10; 5-point: 0/1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLIP_PAIRS", "OCULAR", "PUPIL", "eye_distance"]

_68_FLIP = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)] + [
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    (48, 54), (49, 53), (50, 52), (60, 64), (61, 63), (67, 65), (59, 55), (58, 56)]

FLIP_PAIRS: dict[str, tuple[tuple[int, int], ...]] = {"68": tuple(_68_FLIP), "5": ((0, 1), (3, 4))}

OCULAR: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "68": ((36,), (45,)), "98": ((60,), (72,)), "19": ((6,), (11,)), "5": ((0,), (1,))}
PUPIL: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "68": (tuple(range(36, 42)), tuple(range(42, 48))), "98": ((96,), (97,)), "19": ((7,), (10,)), "5": ((0,), (1,))}


def eye_distance(gt: np.ndarray, rule: tuple[tuple[int, ...], tuple[int, ...]]) -> np.ndarray:
    """Per image ``(N,)``: distance between the means of the two point groups of ``gt (N, K, 2)``."""
    a, b = (gt[:, list(g)].mean(1) for g in rule)
    return np.linalg.norm(a - b, axis=1)
