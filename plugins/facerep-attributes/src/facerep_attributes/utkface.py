"""UTKFace (Zhang et al., CVPR 2017): ``<age>_<gender>_<race>_<datetime>.jpg.chip.jpg`` aligned crops.

Gender (0 male, 1 female) becomes a one-column attribute vector (``attributes``: ``female``), so
the attribute task and probes can use it; age and race (0-4: White, Black, Asian, Indian, Others)
stay in ``meta``. A name without the three numeric fields raises (or is skipped and counted with
``on_error: skip``): a few files of the public release lack one.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import IMAGE_EXTENSIONS, expand_path
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["RACES", "UTKFace", "UTKFaceParams", "parse_name"]

RACES = ("white", "black", "asian", "indian", "others")


def parse_name(name: str) -> tuple[int, int, int]:
    parts = name.split("_")
    if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
        raise ValueError(name)
    age, gender, race = map(int, parts[:3])
    if gender not in (0, 1) or not 0 <= race < len(RACES):
        raise ValueError(name)
    return age, gender, race


@attrs.frozen
class UTKFaceParams:
    root: str = "${FACEREP_DATA}/utkface"
    start: int = 0
    stop: int | None = None
    split: str = "train"
    on_error: Literal["raise", "skip"] = "raise"


class UTKFace:
    def __init__(self, params: UTKFaceParams | None = None) -> None:
        self.params = p = params or UTKFaceParams()
        root = expand_path(p.root)
        files = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)[p.start : p.stop] if root.is_dir() else []
        if not files:
            raise DataError(f"UTKFace: no images in {root}")
        self.files, labels, self.problems = [], [], []
        for f in files:
            try:
                labels.append(parse_name(f.name))
            except ValueError:
                msg = f"{f}: name is not <age>_<gender 0|1>_<race 0-4>_<date>"
                if p.on_error == "raise":
                    raise DataError(msg) from None
                self.problems.append(msg)
                continue
            self.files.append(f)
        self.skipped = len(self.problems)
        self.labels = np.asarray(labels, np.int64)
        self.info = DatasetInfo(name="utkface", split=p.split, labels=("attributes",), class_names={"attributes": ("female",)})

    def __len__(self) -> int:
        return len(self.files)

    def label_array(self, field: str) -> np.ndarray | None:
        return self.labels[:, 1:2].astype(np.uint8) if field == "attributes" else None

    def __getitem__(self, index: int) -> Sample:
        age, gender, race = self.labels[index]
        return Sample(image=decode_image(self.files[index]), attributes=np.array([gender], np.uint8),
                      meta={"path": str(self.files[index]), "age": int(age), "race": RACES[race]})
