"""Landmark datasets in their own file formats.

* ``pts_folder``: images beside 300-W ``.pts`` files (``version: 1``, ``n_points: 68``, ``{``, one
  ``x y`` per line, ``}``). 300-W coordinates are 1-based (Matlab); they are returned 0-based.
* ``mtfl``: MTFL lists (``training.txt`` / ``testing.txt``): `` path x1..x5 y1..y5 gender smile
  glasses pose`` with Windows separators and a leading space; points are left eye, right eye,
  nose, left and right mouth corner, used as given (pixel positions, 0-based).

Landmarks are ``(K, 2)`` float32 ``(x, y)``; errors name the file and line; with ``on_error: skip``
a bad entry is left out at construction and counted in ``skipped`` (with its message in ``problems``).
"""

from __future__ import annotations

from pathlib import Path, PureWindowsPath
from typing import Literal

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import IMAGE_EXTENSIONS, expand_path
from facerep.data.io import read_text
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample
from facerep_landmarks.schemes import FLIP_PAIRS

__all__ = ["MTFL", "MTFLParams", "PtsFolder", "PtsFolderParams", "read_mtfl_list", "read_pts"]


def read_pts(path: Path, expected: int | None = None) -> np.ndarray:
    """A 300-W ``.pts`` file -> ``(K, 2)`` float32, 0-based."""
    lines = read_text(path).splitlines()
    header = {}
    i = 0
    while i < len(lines) and lines[i].strip() != "{":
        key, _, value = lines[i].partition(":")
        header[key.strip()] = value.strip()
        i += 1
    if i == len(lines):
        raise DataError(f"{path}: no '{{' line opening the point list")
    if not header.get("n_points", "").isdecimal():
        raise DataError(f"{path}: missing or invalid 'n_points:' header line")
    n = int(header["n_points"])
    pts = []
    for no in range(i + 2, len(lines) + 1):
        line = lines[no - 1].strip()
        if line == "}":
            break
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            pts.append((float(parts[0]) - 1.0, float(parts[1]) - 1.0))
        except ValueError:
            raise DataError(f"{path}:{no}: expected 'x y', got {line[:40]!r}") from None
    else:
        raise DataError(f"{path}: no closing '}}' line")
    if len(pts) != n:
        raise DataError(f"{path}:{no}: the header says {n} points but {len(pts)} follow")
    if expected is not None and n != expected:
        raise DataError(f"{path}:2: expected {expected} points, the file has {n}")
    return np.asarray(pts, np.float32)


@attrs.frozen
class PtsFolderParams:
    """Attributes:
    root: folder of ``<id>.<jpg|png>`` + ``<id>.pts``; start/stop slice the sorted ids (the
        development split of AFW: 0-237 train, 237-337 test).
    points: the expected number of points per file (68 for 300-W).
    on_error: ``raise`` or ``skip`` (a malformed ``.pts`` or a missing image).
    """

    root: str = "${FACEREP_DATA}/300w/afw"
    start: int = 0
    stop: int | None = None
    points: int = 68
    split: str = "train"
    name: str = "afw"
    on_error: Literal["raise", "skip"] = "raise"


class _LandmarkSet:
    """Shared by the readers: decoded lazily, landmarks parsed up front."""

    files: list[Path]
    landmarks: np.ndarray
    metas: list[dict]
    info: DatasetInfo

    def __len__(self) -> int:
        return len(self.files)

    def label_array(self, field: str) -> np.ndarray | None:
        return self.landmarks if field == "landmarks" else None

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        img = decode_image(path)
        return Sample(image=img, landmarks=self.landmarks[index].copy(), meta={"path": str(path), **self.metas[index]})


class PtsFolder(_LandmarkSet):
    def __init__(self, params: PtsFolderParams | None = None) -> None:
        self.params = p = params or PtsFolderParams()
        root = expand_path(p.root)
        if not root.is_dir():
            raise DataError(f"landmark folder not found: {root}")
        pts_files = sorted(root.glob("*.pts"))[p.start : p.stop]
        if not pts_files:
            raise DataError(f"{root}: no .pts files")
        self.files, marks, self.metas, self.problems = [], [], [], []
        for f in pts_files:
            try:
                image = next((f.with_suffix(e) for e in IMAGE_EXTENSIONS if f.with_suffix(e).is_file()), None)
                if image is None:
                    raise DataError(f"{f}: no image beside it ({f.stem}.jpg/.png)")
                marks.append(read_pts(f, p.points))
            except DataError as exc:
                if p.on_error == "raise":
                    raise
                self.problems.append(str(exc))
                continue
            self.files.append(image)
            self.metas.append({"annotation": str(f)})
        self.skipped = len(self.problems)
        if not marks:
            raise DataError(f"{root}: every one of the {len(pts_files)} .pts files was skipped, first: {self.problems[0]}")
        self.landmarks = np.stack(marks)
        scheme = str(p.points)
        self.info = DatasetInfo(
            name=p.name, split=p.split, labels=("landmarks",), landmark_scheme=scheme, flip_pairs=FLIP_PAIRS.get(scheme, ())
        )


def read_mtfl_list(path: Path) -> list[tuple[str, np.ndarray, dict[str, int]]]:
    """MTFL list lines -> (relative image path with '/', (5, 2) points, attributes)."""
    if not path.is_file():
        raise DataError(f"MTFL list not found: {path}")
    out = []
    for no, line in enumerate(read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 15:
            raise DataError(f"{path}:{no}: expected a path, 10 coordinates and 4 attributes, got {len(parts)} fields")
        try:
            xy = np.array(parts[1:11], dtype=np.float32)
            codes = [int(v) for v in parts[11:]]
        except ValueError:
            raise DataError(f"{path}:{no}: non-numeric coordinate or attribute in {line[:60]!r}") from None
        attrs_ = dict(zip(("gender", "smile", "glasses", "pose"), codes, strict=True))
        out.append((PureWindowsPath(parts[0]).as_posix(), np.stack([xy[:5], xy[5:]], 1), attrs_))
    return out


@attrs.frozen
class MTFLParams:
    """Attributes:
    root: the MTFL folder; list: ``training.txt`` or ``testing.txt``; start/stop slice its lines
        (development split: 0-1600 train, 1600-2000 test).
    """

    root: str = "${FACEREP_DATA}/mtfl"
    list: str = "training.txt"
    start: int = 0
    stop: int | None = None
    split: str = "train"
    on_error: Literal["raise", "skip"] = "raise"


class MTFL(_LandmarkSet):
    def __init__(self, params: MTFLParams | None = None) -> None:
        self.params = p = params or MTFLParams()
        root = expand_path(p.root)
        entries = read_mtfl_list(root / p.list)[p.start : p.stop]
        self.files, marks, self.metas, self.problems = [], [], [], []
        for rel, pts, codes in entries:
            f = root / rel
            if not f.is_file():
                msg = f"{root / p.list}: image {rel} is missing ({f})"
                if p.on_error == "raise":
                    raise DataError(msg)
                self.problems.append(msg)
                continue
            self.files.append(f)
            marks.append(pts)
            self.metas.append(codes)
        self.skipped = len(self.problems)
        if not marks:
            raise DataError(f"{root / p.list}: no usable entries" + (f", first problem: {self.problems[0]}" if self.problems else ""))
        self.landmarks = np.stack(marks)
        self.info = DatasetInfo(name="mtfl", split=p.split, labels=("landmarks",), landmark_scheme="5", flip_pairs=FLIP_PAIRS["5"])
