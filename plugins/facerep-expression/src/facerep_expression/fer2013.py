"""FER2013 (Goodfellow et al., ICONIP 2013) in its two common file formats.

* ``folder``: the Kaggle image export ``<root>/<split>/<class>/*.jpg`` (48x48 grey), class folders
  named ``angry, disgust, fear, happy, sad, surprise, neutral`` (any case).
* ``csv``: the original ``fer2013.csv``: header ``emotion,pixels,Usage``, one row per face with
  2,304 space-separated grey values (48x48, row-major) and ``Usage`` in ``Training``,
  ``PublicTest``, ``PrivateTest``.

Labels follow the official order 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral
in both formats. Grey images are returned as 3-channel RGB.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import IMAGE_EXTENSIONS, expand_path
from facerep.data.io import csv_rows
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["CLASSES", "FER2013", "FER2013Params", "read_fer_csv"]

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGE = {"train": "Training", "test": "PublicTest", "val": "PublicTest", "private_test": "PrivateTest"}


@attrs.frozen
class FER2013Params:
    """Attributes:
    root: folder with ``train/`` and ``test/`` class folders (``folder``) or the CSV file (``csv``).
    format: ``folder`` or ``csv``.
    split: ``train`` or ``test`` (folder name; in the CSV: Training / PublicTest); ``private_test``
        selects the CSV's PrivateTest rows.
    on_error: ``raise`` on an unreadable image or ``skip`` it (counted in ``skipped``).
    """

    root: str = "${FACEREP_DATA}/fer2013"
    format: Literal["folder", "csv"] = "folder"
    split: str = "train"
    on_error: Literal["raise", "skip"] = "raise"


def read_fer_csv(path: Path, usage: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 48, 48) uint8 images and (N,) labels of the rows with this ``Usage``; errors name file:line."""
    if not path.is_file():
        raise DataError(f"FER2013 CSV not found: {path}")
    images, labels = [], []
    with contextlib.closing(csv_rows(path)) as rows:
        _, header = next(rows, (1, None))
        if header is None or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
            raise DataError(f"{path}:1: expected the header 'emotion,pixels,Usage', got {header}")
        for no, row in rows:
            if not row:
                continue
            if len(row) != 3:
                raise DataError(f"{path}:{no}: expected 3 fields (emotion, pixels, Usage), got {len(row)}")
            if row[2].strip() != usage:
                continue
            if not row[0].strip().isdecimal() or not 0 <= int(row[0]) < len(CLASSES):
                raise DataError(f"{path}:{no}: emotion must be an integer 0-6, got {row[0]!r}")
            try:
                px = np.array(row[1].split(), dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}:{no}: pixels must be integers") from None
            if px.size != 48 * 48 or px.min() < 0 or px.max() > 255:
                raise DataError(f"{path}:{no}: expected 2304 pixel values in 0-255, got {px.size} values")
            images.append(px.astype(np.uint8).reshape(48, 48))
            labels.append(int(row[0]))
    return np.stack(images) if images else np.zeros((0, 48, 48), np.uint8), np.asarray(labels, np.int64)


class FER2013:
    def __init__(self, params: FER2013Params | None = None) -> None:
        self.params = p = params or FER2013Params()
        root = expand_path(p.root)
        self.skipped = 0
        self.images: np.ndarray | None = None
        if p.format == "csv":
            usage = USAGE.get(p.split)
            if usage is None:
                raise DataError(f"FER2013 CSV split must be one of {', '.join(USAGE)}, got {p.split!r}")
            self.images, self.labels = read_fer_csv(root, usage)
            self.files: list[Path] = [root] * len(self.labels)
        else:
            folder = root / p.split
            if not folder.is_dir():
                raise DataError(f"FER2013 split folder not found: {folder}")
            files, labels = [], []
            for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
                if sub.name.lower() not in CLASSES:
                    raise DataError(f"{sub}: unknown FER2013 class folder (expected one of {', '.join(CLASSES)})")
                found = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
                files += found
                labels += [CLASSES.index(sub.name.lower())] * len(found)
            if not files:
                raise DataError(f"{folder}: no images in class folders")
            self.files, self.labels = files, np.asarray(labels, np.int64)
        self.info = DatasetInfo(name="fer2013", split=p.split, labels=("expression",), class_names={"expression": CLASSES})

    def __len__(self) -> int:
        return len(self.labels)

    def label_array(self, field: str) -> np.ndarray | None:
        return self.labels if field == "expression" else None

    def __getitem__(self, index: int) -> Sample:
        if self.images is not None:
            grey = self.images[index]
            path = f"{self.files[index]}#row{index}"
        else:
            path = str(self.files[index])
            try:
                rgb = decode_image(self.files[index])
            except DataError:
                if self.params.on_error == "raise":
                    raise
                self.skipped += 1
                return self[(index + 1) % len(self)]
            return Sample(image=rgb, expression=int(self.labels[index]), meta={"path": path})
        return Sample(image=np.repeat(grey[:, :, None], 3, axis=2), expression=int(self.labels[index]), meta={"path": path})
