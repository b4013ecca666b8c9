"""LaPa (Liu et al., AAAI 2020): ``<split>/images/<name>.jpg``, ``<split>/labels/<name>.png``
(grey class-index PNG, 11 classes) and ``<split>/landmarks/<name>.txt`` (first line ``106``, then 106
``x y`` lines). The 106 landmarks come with each sample (FaRL aligns LaPa with 5 of them: eye
centres 104/105, nose tip 54, mouth corners 84/90; its tanh-polar warp is not implemented here).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import expand_path
from facerep.data.io import read_text
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample
from facerep_parsing.celebamask import read_index_mask

__all__ = ["LAPA_CLASSES", "LaPa", "LaPaParams", "read_lapa_landmarks"]

LAPA_CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "inner_mouth", "l_lip", "hair")


def read_lapa_landmarks(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"LaPa landmark file not found: {path}")
    numbered = [(no, line) for no, line in enumerate(read_text(path).splitlines(), start=1) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: empty (expected the number of points, then 'x y' lines)")
    lines = [line for _, line in numbered]
    if not lines[0].strip().isdecimal():
        raise DataError(f"{path}:1: expected the number of points, got {lines[0][:30]!r}")
    n = int(lines[0])
    if len(lines) - 1 != n:
        raise DataError(f"{path}:1: says {n} points but {len(lines) - 1} lines follow")
    pts = []
    for no, line in numbered[1:]:
        try:
            x, y = map(float, line.split())
        except ValueError:
            raise DataError(f"{path}:{no}: expected 'x y', got {line[:40]!r}") from None
        pts.append((x, y))
    return np.asarray(pts, np.float32)


@attrs.frozen
class LaPaParams:
    root: str = "${FACEREP_DATA}/LaPa"
    split: str = "train"
    start: int = 0
    stop: int | None = None


class LaPa:
    def __init__(self, params: LaPaParams | None = None) -> None:
        self.params = p = params or LaPaParams()
        self.base = expand_path(p.root) / p.split
        images = sorted((self.base / "images").glob("*.jpg"))[p.start : p.stop]
        if not images:
            raise DataError(f"LaPa: no images under {self.base / 'images'}")
        self.names = [f.stem for f in images]
        self.info = DatasetInfo(name="lapa", split=p.split, labels=("mask", "landmarks"), class_names={"mask": LAPA_CLASSES},
                                landmark_scheme="106")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        image = decode_image(self.base / "images" / f"{name}.jpg")
        mask = read_index_mask(self.base / "labels" / f"{name}.png", len(LAPA_CLASSES))
        if mask.shape != image.shape[:2]:
            raise DataError(f"{self.base / 'labels' / name}.png: mask {mask.shape} and image {image.shape[:2]} differ")
        marks = read_lapa_landmarks(self.base / "landmarks" / f"{name}.txt")
        return Sample(image=image, mask=mask, landmarks=marks, meta={"path": str(self.base / "images" / f"{name}.jpg")})
