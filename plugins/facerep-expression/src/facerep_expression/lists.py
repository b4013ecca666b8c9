"""RAF-DB and AffectNet expression lists.

* RAF-DB basic (Li et al. 2017): ``EmoLabel/list_patition_label.txt`` (sic) lines ``train_00001.jpg 5``
  with labels 1-7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral; the aligned
  images are ``Image/aligned/train_00001_aligned.jpg``. The split comes from the file-name prefix.
* AffectNet (Mollahosseini et al. 2017): ``training.csv`` / ``validation.csv`` with columns
  ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks, expression,
  valence, arousal``; expression 0-7 = Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger,
  Contempt; 8-10 (None, Uncertain, No-face) are left out; ``num_classes: 7`` also drops Contempt.
  Any other value (e.g. ``-1``, ``11``, ``abc``) is not an AffectNet code: DataError naming file:line.
  Images are cropped to the face box.

Each dataset keeps its own label order (``DatasetInfo.class_names["expression"]``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import expand_path
from facerep.data.io import csv_rows, read_text
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["RAFDB", "AffectNet", "AffectNetParams", "RAFDBParams"]

RAF_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
AFFECTNET_CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
#: The annotation codes after the 8 expressions; rows with them are left out.
AFFECTNET_NON_EXPRESSIONS = ("none", "uncertain", "no-face")
_AFFECTNET_CODES = (
    "0-10 (" + ", ".join(f"{i} {c}" for i, c in enumerate(AFFECTNET_CLASSES + AFFECTNET_NON_EXPRESSIONS)) + "; 8-10 are left out)"
)


@attrs.frozen
class RAFDBParams:
    root: str = "${FACEREP_DATA}/rafdb/basic"
    labels: str = "EmoLabel/list_patition_label.txt"
    images: str = "Image/aligned"
    split: Literal["train", "test"] = "train"


class RAFDB:
    def __init__(self, params: RAFDBParams | None = None) -> None:
        self.params = p = params or RAFDBParams()
        root = expand_path(p.root)
        path = root / p.labels
        if not path.is_file():
            raise DataError(f"RAF-DB label list not found: {path}")
        self.files, labels = [], []
        for no, line in enumerate(read_text(path).splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdecimal() or not 1 <= int(parts[1]) <= 7:
                raise DataError(f"{path}:{no}: expected '<name>.jpg <label 1-7>', got {line[:50]!r}")
            if not parts[0].startswith(p.split + "_"):
                continue
            stem = Path(parts[0]).stem
            self.files.append(root / p.images / f"{stem}_aligned.jpg")
            labels.append(int(parts[1]) - 1)
        self.labels = np.asarray(labels, np.int64)
        self.info = DatasetInfo(name="rafdb", split=p.split, labels=("expression",), class_names={"expression": RAF_CLASSES})

    def __len__(self) -> int:
        return len(self.files)

    def label_array(self, field: str) -> np.ndarray | None:
        return self.labels if field == "expression" else None

    def __getitem__(self, index: int) -> Sample:
        return Sample(image=decode_image(self.files[index]), expression=int(self.labels[index]), meta={"path": str(self.files[index])})


@attrs.frozen
class AffectNetParams:
    root: str = "${FACEREP_DATA}/affectnet"
    list: str = "training.csv"
    images: str = "Manually_Annotated_Images"
    num_classes: Literal[7, 8] = 8
    split: str = "train"


class AffectNet:
    def __init__(self, params: AffectNetParams | None = None) -> None:
        self.params = p = params or AffectNetParams()
        root = expand_path(p.root)
        path = root / p.list
        if not path.is_file():
            raise DataError(f"AffectNet list not found: {path}")
        self.files, self.boxes, labels, self.va = [], [], [], []
        with contextlib.closing(csv_rows(path)) as reader:
            _, header = next(reader, (1, []))
            need = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression", "valence", "arousal")
            missing = [c for c in need if c not in header]
            if missing:
                raise DataError(f"{path}:1: header lacks column(s) {missing}")
            col = {c: header.index(c) for c in need}
            for no, row in reader:
                if not row:
                    continue
                if len(row) <= max(col.values()):
                    raise DataError(f"{path}:{no}: malformed row {','.join(row)[:60]!r} (expected {len(header)} fields, got {len(row)})")
                code = row[col["expression"]].strip()
                label = int(code) if code.isdecimal() else -1
                if not 0 <= label < len(AFFECTNET_CLASSES) + len(AFFECTNET_NON_EXPRESSIONS):
                    raise DataError(f"{path}:{no}: expression {code!r} is not an AffectNet code; expected {_AFFECTNET_CODES}")
                try:
                    box = [int(float(row[col[c]])) for c in ("face_x", "face_y", "face_width", "face_height")]
                    va = (float(row[col["valence"]]), float(row[col["arousal"]]))
                except (ValueError, IndexError):
                    raise DataError(f"{path}:{no}: malformed row {','.join(row)[:60]!r}") from None
                if label >= p.num_classes:  # None / Uncertain / No-face (and Contempt for 7 classes)
                    continue
                self.files.append(root / p.images / row[col["subDirectory_filePath"]])
                self.boxes.append(box)
                labels.append(label)
                self.va.append(va)
        self.labels = np.asarray(labels, np.int64)
        self.info = DatasetInfo(name="affectnet", split=p.split, labels=("expression",),
                                class_names={"expression": AFFECTNET_CLASSES[: p.num_classes]})

    def __len__(self) -> int:
        return len(self.files)

    def label_array(self, field: str) -> np.ndarray | None:
        if field == "valence_arousal":  # (N, 2), read from the list (expression.valence_arousal's targets)
            return np.asarray(self.va, np.float32).reshape(-1, 2)
        return self.labels if field == "expression" else None

    def __getitem__(self, index: int) -> Sample:
        img = decode_image(self.files[index])
        x, y, w, h = self.boxes[index]
        x0, y0 = max(0, x), max(0, y)
        crop = img[y0 : y + h, x0 : x + w]
        if crop.size == 0:
            raise DataError(f"{self.files[index]}: face box {self.boxes[index]} lies outside the {img.shape[1]}x{img.shape[0]} image")
        v, a = self.va[index]
        return Sample(image=np.ascontiguousarray(crop), expression=int(self.labels[index]),
                      meta={"path": str(self.files[index]), "valence": v, "arousal": a})
