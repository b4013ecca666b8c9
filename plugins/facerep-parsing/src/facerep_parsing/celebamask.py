"""CelebAMask-HQ (Lee et al., CVPR 2020) in its two layouts.

* ``index``: ``images/<id>.jpg`` + ``masks/<id>.png``, one class-index mask per image (the layout of
  processed releases and challenge subsets). The PNGs are palette images: the class is the palette
  *index*, read with Pillow (OpenCV would expand the palette into colours).
* ``parts``: the original release, ``CelebA-HQ-img/<id>.jpg`` (1024 x 1024) and
  ``CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<part>.png`` (512 x 512 binary masks, one per part
  present). Parts are painted in :data:`CLASSES` order (later parts over earlier ones, as the
  release's own merge script does) and the image is resized to the 512 x 512 mask grid.

Classes (19): 0 background, 1 skin, 2 nose, 3 eye_g, 4 l_eye, 5 r_eye, 6 l_brow, 7 r_brow,
8 l_ear, 9 r_ear, 10 mouth, 11 u_lip, 12 l_lip, 13 hair, 14 hat, 15 ear_r, 16 neck_l, 17 neck,
18 cloth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import cv2
import numpy as np

from facerep.data.folder import expand_path
from facerep.data.io import check_image_size, decode_image
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["CLASSES", "CelebAMaskHQ", "CelebAMaskParams", "read_index_mask", "read_part_masks"]

CLASSES = ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip",
           "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")


def read_index_mask(path: Path, n_classes: int = len(CLASSES)) -> np.ndarray:
    """A class-index PNG -> (H, W) uint8; values must be < ``n_classes``."""
    import io

    from PIL import Image  # Pillow keeps palette indices; see the module docstring

    if not path.is_file():
        raise DataError(f"mask not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read mask: {exc.strerror or exc}") from None
    check_image_size(data, path=path)  # before Pillow allocates anything
    try:
        with Image.open(io.BytesIO(data)) as im:
            mask = np.array(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read mask: {exc}") from None
    if mask.ndim != 2:
        raise DataError(f"{path}: expected a single-channel class-index mask, got shape {mask.shape}")
    if mask.size and mask.max() >= n_classes:
        bad = sorted(int(v) for v in np.unique(mask) if v >= n_classes)
        raise DataError(f"{path}: mask value(s) {bad} outside the {n_classes} classes (0-{n_classes - 1})")
    return mask.astype(np.uint8)


def read_part_masks(folder: Path, index: int, size: int = 512) -> np.ndarray:
    """Merge the release's per-part binary masks of image ``index`` into one class-index mask."""
    mask = np.zeros((size, size), np.uint8)
    for c, part in enumerate(CLASSES[1:], start=1):
        f = folder / str(index // 2000) / f"{index:05d}_{part}.png"
        if f.is_file():
            m = decode_image(f, grey=True)  # DataError naming the file when it is not a readable image
            if m.shape != (size, size):
                raise DataError(f"{f}: part mask is {m.shape[1]}x{m.shape[0]}, expected {size}x{size}")
            mask[m > 127] = c
    return mask


@attrs.frozen
class CelebAMaskParams:
    """Attributes:
    root: the folder holding ``images/`` + ``masks/`` (``index``) or ``CelebA-HQ-img/`` +
        ``CelebAMask-HQ-mask-anno/`` (``parts``).
    start, stop: slice of the sorted ids (development split: 0-400 train, 400-500 test).
    """

    root: str = "${FACEREP_DATA}/celebamask_hq/train"
    layout: Literal["index", "parts"] = "index"
    start: int = 0
    stop: int | None = None
    split: str = "train"


class CelebAMaskHQ:
    def __init__(self, params: CelebAMaskParams | None = None) -> None:
        self.params = p = params or CelebAMaskParams()
        self.root = root = expand_path(p.root)
        if p.layout == "index":
            images = sorted((root / "images").glob("*.jpg"))
            self.items = [(f, root / "masks" / f"{f.stem}.png") for f in images][p.start : p.stop]
            missing = [m for _, m in self.items if not m.is_file()]
            if missing:
                raise DataError(f"{len(missing)} mask(s) missing, e.g. {missing[0]} (for {missing[0].stem}.jpg)")
        else:
            images = sorted((root / "CelebA-HQ-img").glob("*.jpg"), key=lambda f: int(f.stem) if f.stem.isdecimal() else -1)
            bad = [f for f in images if not f.stem.isdecimal()]
            if bad:
                raise DataError(f"{bad[0]}: the original layout names images by number (e.g. 0.jpg)")
            self.items = [(f, root / "CelebAMask-HQ-mask-anno") for f in images][p.start : p.stop]
        if not self.items:
            raise DataError(f"{root}: no CelebAMask-HQ images found ({p.layout} layout)")
        self.info = DatasetInfo(name="celebamask_hq", split=p.split, labels=("mask",), class_names={"mask": CLASSES})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        image_path, mask_path = self.items[index]
        image = decode_image(image_path)
        if self.params.layout == "index":
            mask = read_index_mask(mask_path)
        else:
            mask = read_part_masks(mask_path, int(image_path.stem))
            if image.shape[:2] != mask.shape:
                image = cv2.resize(image, mask.shape[::-1], interpolation=cv2.INTER_AREA)
        if image.shape[:2] != mask.shape:
            raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")
        return Sample(image=image, mask=mask, meta={"path": str(image_path), "mask_path": str(mask_path)})

    def label_array(self, field: str) -> None:
        return None  # masks are images: nothing cheap to stack
