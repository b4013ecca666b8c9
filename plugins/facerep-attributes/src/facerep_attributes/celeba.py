"""CelebA (Liu et al., ICCV 2015) in its official file formats.

- ``list_attr_celeba.txt``: a count line, a line of the 40 attribute names, then one row per image
  ``<file> <40 values in {-1, 1}>``.
- ``identity_CelebA.txt``: ``<file> <identity>`` per line (optional).
- ``list_eval_partition.txt``: ``<file> <0|1|2>`` (train/val/test; optional).
- ``list_landmarks_align_celeba.txt``: a count line, a header line, then ``<file>`` and 10 integers
  (left eye, right eye, nose, left and right mouth corner, x y each) in the 178 x 218 aligned image
  (optional). Landmarks are rescaled when the stored images are smaller (the development copy is
  downscaled to 89 x 109).

Attributes are returned as 0/1 uint8 vectors in the file's attribute order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import expand_path
from facerep.data.io import read_text
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["CelebA", "CelebAParams", "read_attribute_file", "read_pairs_file"]

PARTITIONS = {"train": 0, "val": 1, "test": 2}


@attrs.frozen
class CelebAParams:
    """Attributes:
    root: folder holding the annotation files and the image folder.
    images: image sub-folder.
    start, stop: 1-based inclusive range of image numbers (``000001.jpg`` is 1), applied after
        ``partition``; the development split uses 1-8000 / 8001-10000.
    partition: pick an official partition (needs ``list_eval_partition.txt``), or ``all``.
    """

    root: str = "${FACEREP_DATA}/celeba"
    images: str = "img_align_celeba"
    start: int = 1
    stop: int | None = None
    partition: Literal["all", "train", "val", "test"] = "all"
    split: str = "train"


def read_attribute_file(path: Path) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Returns (attribute names, file names, (N, A) uint8 0/1). Errors name the file and line."""
    if not path.is_file():
        raise DataError(f"CelebA attribute file not found: {path}")
    lines = read_text(path).splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a names line, got {len(lines)} lines")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}:1: expected the number of images, got {lines[0][:40]!r}") from None
    names = tuple(lines[1].split())
    files, rows = [], []
    for no, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DataError(f"{path}:{no}: expected a file name and {len(names)} values, got {len(parts) - 1} values")
        values = parts[1:]
        if any(v not in ("1", "-1") for v in values):
            raise DataError(f"{path}:{no}: attribute values must be 1 or -1, got {sorted(set(values) - {'1', '-1'})}")
        files.append(parts[0])
        rows.append([v == "1" for v in values])
    if count != len(files):
        raise DataError(f"{path}: the count line says {count} images but {len(files)} rows follow")
    return names, files, np.asarray(rows, dtype=np.uint8)


def read_landmark_file(path: Path) -> dict[str, np.ndarray]:
    """``list_landmarks_align_celeba.txt`` -> {file: (5, 2) float32}; errors name file:line."""
    lines = read_text(path).splitlines()
    out: dict[str, np.ndarray] = {}
    for no, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 11 or not all(v.lstrip("-").isdecimal() for v in parts[1:]):
            raise DataError(f"{path}:{no}: expected '<file>' and 10 integer coordinates, got {line[:60]!r}")
        out[parts[0]] = np.array(parts[1:], dtype=np.float32).reshape(5, 2)
    return out


def read_pairs_file(path: Path, kind: str) -> dict[str, int]:
    """``<file> <integer>`` per line (identities, partitions)."""
    out: dict[str, int] = {}
    for no, line in enumerate(read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdecimal():
            raise DataError(f"{path}:{no}: expected '<file> <{kind}>', got {line[:60]!r}")
        out[parts[0]] = int(parts[1])
    return out


class CelebA:
    def __init__(self, params: CelebAParams | None = None) -> None:
        self.params = p = params or CelebAParams()
        root = expand_path(p.root)
        names, files, attrs_ = read_attribute_file(root / "list_attr_celeba.txt")
        keep = np.ones(len(files), bool)
        if p.partition != "all":
            part_file = root / "list_eval_partition.txt"
            if not part_file.is_file():
                raise DataError(f"partition {p.partition!r} needs {part_file}, which is missing")
            parts = read_pairs_file(part_file, "partition")
            keep &= np.array([parts.get(f, -1) == PARTITIONS[p.partition] for f in files])
        numbers = np.array([int(Path(f).stem) if Path(f).stem.isdecimal() else i + 1 for i, f in enumerate(files)])
        keep &= numbers >= p.start
        if p.stop is not None:
            keep &= numbers <= p.stop
        self.files = [root / p.images / f for f, k in zip(files, keep, strict=True) if k]
        self.attributes = attrs_[keep]
        id_file = root / "identity_CelebA.txt"
        ids = read_pairs_file(id_file, "identity") if id_file.is_file() else {}
        self.identities = [ids.get(f.name) for f in self.files]
        missing = [f for f in self.files if not f.is_file()]
        if missing:
            raise DataError(f"{len(missing)} CelebA images listed in the attribute file are missing, e.g. {missing[0]}")
        lm_file = root / "list_landmarks_align_celeba.txt"
        marks = read_landmark_file(lm_file) if lm_file.is_file() else {}
        self.landmarks = [marks.get(f.name) for f in self.files]
        labels = ("attributes", "identity") if ids else ("attributes",)
        self.info = DatasetInfo(name="celeba", split=p.split, labels=labels, class_names={"attributes": names})

    def __len__(self) -> int:
        return len(self.files)

    def label_array(self, field: str) -> np.ndarray | None:
        """Labels straight from the annotation files (no image decoding)."""
        if field == "attributes":
            return self.attributes
        if field == "identity" and self.identities and all(i is not None for i in self.identities):
            return np.asarray(self.identities, dtype=np.int64)
        return None

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        image = decode_image(path)
        marks = self.landmarks[index]
        if marks is not None:  # annotated on the 178 x 218 aligned image
            marks = marks * np.array([image.shape[1] / 178.0, image.shape[0] / 218.0], np.float32)
        return Sample(image=image, attributes=self.attributes[index], identity=self.identities[index], landmarks=marks,
                      meta={"path": str(path)})
