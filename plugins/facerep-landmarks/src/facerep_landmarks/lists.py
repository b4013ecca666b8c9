"""Landmark annotation lists of WFLW and AFLW-19.

* WFLW (Wu et al. 2018): ``list_98pt_rect_attr_{train,test}.txt``, one face per line: 196 numbers
  (98 ``x y`` pairs), the face rectangle ``x_min y_min x_max y_max``, six 0/1 flags (pose,
  expression, illumination, make-up, occlusion, blur) and the image path under ``WFLW_images/``.
* AFLW-19 in HRNet's csv files (``face_landmarks_aflw_{train,test}.csv``): a header naming
  ``image_name``, ``scale`` (box side / 200), ``center_w``, ``center_h``, optionally ``box_size``,
  and ``original_<i>_x`` / ``original_<i>_y`` for the 19 points. The face box (for the box and
  diagonal NME normalisers) is kept in ``meta["box"]``.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

from facerep.data.folder import expand_path
from facerep.data.io import csv_rows, read_text
from facerep.errors import DataError
from facerep.types import DatasetInfo
from facerep_landmarks.readers import _LandmarkSet

__all__ = ["AFLW19", "WFLW", "AFLW19Params", "WFLWParams"]

WFLW_FLAGS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")


@attrs.frozen
class WFLWParams:
    root: str = "${FACEREP_DATA}/wflw"
    list: str = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt"
    images: str = "WFLW_images"
    split: str = "train"
    subset: Literal["all", "pose", "expression", "illumination", "makeup", "occlusion", "blur"] = "all"


class WFLW(_LandmarkSet):
    def __init__(self, params: WFLWParams | None = None) -> None:
        self.params = p = params or WFLWParams()
        root = expand_path(p.root)
        path = root / p.list
        if not path.is_file():
            raise DataError(f"WFLW list not found: {path}")
        self.files, marks, self.metas = [], [], []
        for no, line in enumerate(read_text(path).splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 196 + 4 + 6 + 1:
                raise DataError(f"{path}:{no}: expected 196 coordinates, 4 box values, 6 flags and a path, got {len(parts)} fields")
            try:
                nums = np.array(parts[:206], dtype=np.float64)
            except ValueError:
                raise DataError(f"{path}:{no}: non-numeric coordinate, box or flag") from None
            flags = dict(zip(WFLW_FLAGS, nums[200:206].astype(int).tolist(), strict=True))
            if p.subset != "all" and not flags[p.subset]:
                continue
            marks.append(nums[:196].reshape(98, 2).astype(np.float32))
            self.files.append(root / p.images / parts[206])
            self.metas.append({"box": nums[196:200].tolist(), **flags})
        if not marks:
            raise DataError(f"{path}: no faces (subset {p.subset})")
        self.landmarks = np.stack(marks)
        self.info = DatasetInfo(name="wflw", split=p.split, labels=("landmarks",), landmark_scheme="98")

    def boxes(self) -> np.ndarray:
        return np.array([m["box"] for m in self.metas])


@attrs.frozen
class AFLW19Params:
    root: str = "${FACEREP_DATA}/aflw"
    list: str = "face_landmarks_aflw_train.csv"
    images: str = "images"
    split: str = "train"


class AFLW19(_LandmarkSet):
    def __init__(self, params: AFLW19Params | None = None) -> None:
        self.params = p = params or AFLW19Params()
        root = expand_path(p.root)
        path = root / p.list
        if not path.is_file():
            raise DataError(f"AFLW-19 csv not found: {path}")
        rows = list(csv_rows(path))
        if not rows:
            raise DataError(f"{path}: empty")
        header = [h.strip() for h in rows[0][1]]
        cols = ["image_name", "scale", "center_w", "center_h"] + [f"original_{i}_{a}" for i in range(19) for a in "xy"]
        missing = [c for c in cols if c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks {missing[:4]}{'...' if len(missing) > 4 else ''}")
        idx = {c: header.index(c) for c in [*cols, "box_size"] if c in header}
        self.files, marks, self.metas = [], [], []
        for no, row in rows[1:]:
            if not row:
                continue
            try:
                pts = np.array([float(row[idx[f"original_{i}_{a}"]]) for i in range(19) for a in "xy"], np.float32).reshape(19, 2)
                cx, cy, scale = (float(row[idx[c]]) for c in ("center_w", "center_h", "scale"))
                side = float(row[idx["box_size"]]) if "box_size" in idx else scale * 200.0
            except (ValueError, IndexError):
                raise DataError(f"{path}:{no}: malformed row") from None
            marks.append(pts)
            self.files.append(root / p.images / row[idx["image_name"]])
            self.metas.append({"box": [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]})
        if not marks:
            raise DataError(f"{path}: no faces after the header")
        self.landmarks = np.stack(marks)
        self.info = DatasetInfo(name="aflw19", split=p.split, labels=("landmarks",), landmark_scheme="19")

    def boxes(self) -> np.ndarray:
        return np.array([m["box"] for m in self.metas])
