"""Action-unit datasets in their release formats.

* DISFA (Mavadati et al. 2013): ``ActionUnit_Labels/<subject>/<subject>_au<k>.txt``, one line
  ``frame,intensity`` (intensity 0-5, frames 1-based) per video frame, for the 12 AUs 1, 2, 4, 5, 6,
  9, 12, 15, 17, 20, 25, 26. The release ships videos; frames are expected extracted as
  ``<images>/<subject>/<frame>.jpg`` (``frame_name`` formats the file name, default ``{frame}.jpg``).
* BP4D (Zhang et al. 2014): AU occurrence CSVs ``<subject>_<task>.csv`` with a header row of AU
  numbers (first column: frame number) and values 0/1, 9 = not coded (kept as -1, ignored by F1).
  Frames as ``<images>/<subject>/<task>/<frame>.jpg`` (``frame_name``, default ``{frame:04d}.jpg``).

``Sample.aus`` is float32 (DISFA intensities, or occurrences ``intensity >= threshold`` when
``mode: occurrence``) or int8 occurrences (BP4D, -1 unknown); ``DatasetInfo.class_names["aus"]``
names the AUs.
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

__all__ = ["BP4D", "DISFA", "BP4DParams", "DISFAParams", "read_bp4d_csv", "read_disfa_au"]

DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)


def read_disfa_au(path: Path) -> dict[int, int]:
    """``frame,intensity`` lines -> {frame: intensity}; errors name file:line."""
    if not path.is_file():
        raise DataError(f"DISFA label file not found: {path}")
    out = {}
    for no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.replace(" ", "").split(",")
        if len(parts) != 2 or not all(p.lstrip("-").isdecimal() for p in parts):
            raise DataError(f"{path}:{no}: expected 'frame,intensity', got {line[:40]!r}")
        frame, value = int(parts[0]), int(parts[1])
        if not 0 <= value <= 5:
            raise DataError(f"{path}:{no}: AU intensity must be 0-5, got {value}")
        out[frame] = value
    return out


@attrs.frozen
class DISFAParams:
    root: str = "${FACEREP_DATA}/disfa"
    labels: str = "ActionUnit_Labels"
    images: str = "Images"
    frame_name: str = "{frame}.jpg"
    subjects: tuple[str, ...] = ()  # empty: every subject folder
    mode: Literal["intensity", "occurrence"] = "intensity"
    threshold: int = 2  # occurrence = intensity >= 2 (the usual DISFA convention)
    split: str = "train"


class _AUFrames:
    """Frames on disk with one AU vector each (shared by the readers)."""

    files: list[Path]
    aus: np.ndarray
    info: DatasetInfo

    def __len__(self) -> int:
        return len(self.files)

    def label_array(self, field: str) -> np.ndarray | None:
        return self.aus if field == "aus" else None

    def __getitem__(self, index: int) -> Sample:
        return Sample(image=decode_image(self.files[index]), aus=self.aus[index].copy(), meta={"path": str(self.files[index])})


class DISFA(_AUFrames):
    def __init__(self, params: DISFAParams | None = None) -> None:
        self.params = p = params or DISFAParams()
        root = expand_path(p.root)
        label_root = root / p.labels
        subjects = list(p.subjects)
        if not subjects and label_root.is_dir():
            subjects = sorted(d.name for d in label_root.iterdir() if d.is_dir())
        if not subjects:
            raise DataError(f"DISFA: no subject folders under {label_root}")
        self.files: list[Path] = []
        rows = []
        for subj in subjects:
            per_au = [read_disfa_au(label_root / subj / f"{subj}_au{k}.txt") for k in DISFA_AUS]
            frames = sorted(set(per_au[0]))
            for k, table in zip(DISFA_AUS, per_au, strict=True):
                if sorted(table) != frames:
                    raise DataError(f"{label_root / subj / f'{subj}_au{k}.txt'}: frames differ from {subj}_au1.txt")
            for fr in frames:
                self.files.append(root / p.images / subj / p.frame_name.format(frame=fr))
                rows.append([table[fr] for table in per_au])
        values = np.asarray(rows, np.float32)
        self.aus = (values >= p.threshold).astype(np.float32) if p.mode == "occurrence" else values
        names = tuple(f"AU{k}" for k in DISFA_AUS)
        self.info = DatasetInfo(name="disfa", split=p.split, labels=("aus",), class_names={"aus": names})



def read_bp4d_csv(path: Path, aus: tuple[int, ...] = BP4D_AUS) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N,), occurrences (N, len(aus)) int8 with -1 for 9 = not coded)."""
    if not path.is_file():
        raise DataError(f"BP4D AU file not found: {path}")
    lines = read_text(path).splitlines()
    if not lines:
        raise DataError(f"{path}: empty")
    header = [h.strip() for h in lines[0].split(",")]
    try:
        cols = [header.index(str(a)) for a in aus]
    except ValueError:
        missing = [a for a in aus if str(a) not in header]
        raise DataError(f"{path}:1: header lacks AU column(s) {missing}") from None
    frames, rows = [], []
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [v.strip() for v in line.split(",")]
        if len(parts) != len(header):
            raise DataError(f"{path}:{no}: expected {len(header)} values, got {len(parts)}")
        try:
            vals = [int(parts[c]) for c in cols]
            frames.append(int(parts[0]))
        except ValueError:
            raise DataError(f"{path}:{no}: non-integer value in {line[:60]!r}") from None
        if any(v not in (0, 1, 9) for v in vals):
            raise DataError(f"{path}:{no}: AU occurrence values must be 0, 1 or 9, got {sorted(set(vals) - {0, 1, 9})}")
        rows.append([-1 if v == 9 else v for v in vals])
    return np.asarray(frames, np.int64), np.asarray(rows, np.int8)


@attrs.frozen
class BP4DParams:
    root: str = "${FACEREP_DATA}/bp4d"
    labels: str = "AUCoding/AU_OCC"
    images: str = "images"
    frame_name: str = "{frame:04d}.jpg"
    subjects: tuple[str, ...] = ()  # empty: every CSV
    split: str = "train"


class BP4D(_AUFrames):
    def __init__(self, params: BP4DParams | None = None) -> None:
        self.params = p = params or BP4DParams()
        root = expand_path(p.root)
        csvs = sorted((root / p.labels).glob("*.csv"))
        if p.subjects:
            csvs = [c for c in csvs if c.stem.split("_")[0] in p.subjects]
        if not csvs:
            raise DataError(f"BP4D: no AU CSV files under {root / p.labels}")
        self.files: list[Path] = []
        blocks = []
        for c in csvs:
            subject, _, task = c.stem.partition("_")
            frames, occ = read_bp4d_csv(c)
            self.files += [root / p.images / subject / task / p.frame_name.format(frame=int(f)) for f in frames]
            blocks.append(occ)
        self.aus = np.concatenate(blocks)
        self.info = DatasetInfo(name="bp4d", split=p.split, labels=("aus",), class_names={"aus": tuple(f"AU{k}" for k in BP4D_AUS)})

