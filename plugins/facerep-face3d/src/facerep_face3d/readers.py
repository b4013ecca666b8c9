"""Readers for the 3D face alignment sets of 3DDFA (Zhu et al., "Face Alignment Across Large
Poses: A 3D Solution", CVPR 2016), in their released layouts (MATLAB v5 ``.mat`` files):

- **AFLW2000-3D** (test): ``image00002.jpg`` + ``image00002.mat`` per face; the ``.mat`` holds
  ``pt3d_68`` ``(3, 68)`` (x, y in image pixels, MATLAB 1-based; z depth in the same units),
  ``Pose_Para`` ``(1, 7)`` = pitch, yaw, roll (radians), tx, ty, tz, scale, and the 3DMM
  ``Shape_Para`` ``(199, 1)`` / ``Exp_Para`` ``(29, 1)``.
- **300W-LP** (training): ``<subset>/<name>.jpg`` + ``<subset>/<name>.mat`` (``Pose_Para``,
  ``Shape_Para``, ``Exp_Para``) and ``landmarks/<subset>/<name>_pts.mat`` with ``pts_3d``
  ``(68, 2)``: the 2D projection of the fitted 3D shape's 68 landmarks (occluded ones included).
  Its depth is not stored: it is NaN here and the task trains on x, y alone (the 3DMM head of
  ``facerep_face3d.morphable`` still predicts a depth, through its basis). The 3DMM parameters are
  kept in ``meta`` for whoever reconstructs it with the Basel Face Model.

Every sample has ``landmarks`` ``(68, 2)`` (0-based x, y) and, in ``meta``: ``points3d`` ``(68, 3)``
(0-based x, y; z as released, NaN when unknown), ``pose`` (pitch, yaw, roll in radians), ``yaw_deg``
and the 3DMM parameters. ``label_array`` gives ``landmarks``, ``points3d`` and ``yaw_deg`` without
decoding images (for evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import IMAGE_EXTENSIONS, expand_path
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample
from facerep_landmarks.schemes import FLIP_PAIRS

__all__ = ["AFLW2000", "W300LP", "AFLW2000Params", "W300LPParams", "read_mat"]


def read_mat(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The named arrays of a MATLAB ``.mat`` file (float64; ``optional`` ones when present), or a
    DataError naming the file and the key."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError... on a bad file
        raise DataError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        have = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no {', '.join(missing)} (it holds {', '.join(have) or 'nothing'})")
    try:
        return {k: np.asarray(mat[k], np.float64) for k in (*keys, *(o for o in optional if o in mat))}
    except (TypeError, ValueError):
        raise DataError(f"{path}: {', '.join(keys)} must be numeric arrays") from None


def _shaped(path: Path, key: str, value: np.ndarray, shapes: tuple[tuple[int, ...], ...]) -> np.ndarray:
    for s in shapes:
        if value.shape == s:
            return value
    raise DataError(f"{path}: {key} has shape {value.shape}, expected {' or '.join(str(s) for s in shapes)}")


def _pose(path: Path, pose: np.ndarray) -> np.ndarray:
    pose = pose.reshape(-1)
    if pose.size < 3:
        raise DataError(f"{path}: Pose_Para has {pose.size} values, expected 7 (pitch, yaw, roll, tx, ty, tz, scale)")
    return pose


class _Face3DSet:
    files: list[Path]
    points3d: np.ndarray  # (N, 68, 3), x y 0-based
    metas: list[dict[str, Any]]
    info: DatasetInfo

    def __len__(self) -> int:
        return len(self.files)

    def label_array(self, field: str) -> np.ndarray | None:
        if field == "landmarks":
            return self.points3d[:, :, :2].astype(np.float32)
        if field == "points3d":
            return self.points3d.astype(np.float32)
        if field == "yaw_deg":
            return np.array([m["yaw_deg"] for m in self.metas], np.float32)
        return None

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        pts = self.points3d[index].astype(np.float32)
        meta = {"path": str(path), "points3d": pts.copy(), **self.metas[index]}
        return Sample(image=decode_image(path), landmarks=pts[:, :2].copy(), meta=meta)

    def _read_all(self, items: list[Any], read_one: Any, on_error: str, name: str, split: str, where: Path) -> None:
        """``read_one(item) -> (image, points3d, meta)`` for every item; a DataError raises or, with
        ``on_error: skip``, is counted and the face left out."""
        entries, problems = [], []
        for item in items:
            try:
                entries.append(read_one(item))
            except DataError as exc:
                if on_error == "raise":
                    raise
                problems.append(str(exc))
        self._finish(name, split, entries, problems, where)

    def _finish(self, name: str, split: str, entries: list[tuple[Path, np.ndarray, dict]], problems: list[str], where: Path) -> None:
        self.problems, self.skipped = problems, len(problems)
        if not entries:
            raise DataError(f"{where}: no usable faces" + (f", first problem: {problems[0]}" if problems else ""))
        self.files = [e[0] for e in entries]
        self.points3d = np.stack([e[1] for e in entries])
        self.metas = [e[2] for e in entries]
        self.info = DatasetInfo(name=name, split=split, labels=("landmarks",), landmark_scheme="68", flip_pairs=FLIP_PAIRS["68"])


def _image_beside(mat: Path) -> Path:
    image = next((mat.with_suffix(e) for e in IMAGE_EXTENSIONS if mat.with_suffix(e).is_file()), None)
    if image is None:
        raise DataError(f"{mat}: no image beside it ({mat.stem}.jpg/.png)")
    return image


_MORPHABLE = ("Shape_Para", "Exp_Para")


def _params_meta(pose: np.ndarray, mat: dict[str, np.ndarray]) -> dict[str, Any]:
    meta: dict[str, Any] = {"pose": pose[:3].astype(np.float32), "yaw_deg": float(np.degrees(pose[1])),
                            "pose_para": pose.astype(np.float32)}
    for key, name in (("Shape_Para", "shape_para"), ("Exp_Para", "exp_para")):
        if key in mat:
            meta[name] = mat[key].reshape(-1).astype(np.float32)
    return meta


@attrs.frozen
class AFLW2000Params:
    """Attributes:
    root: the AFLW2000 folder (``image*.jpg`` + ``image*.mat``); start/stop slice the sorted files.
    on_error: ``raise`` or ``skip`` (a malformed ``.mat`` or a missing image; skips are counted).
    """

    root: str = "${FACEREP_DATA}/aflw2000_3d"
    start: int = 0
    stop: int | None = None
    split: str = "test"
    on_error: Literal["raise", "skip"] = "raise"


class AFLW2000(_Face3DSet):
    def __init__(self, params: AFLW2000Params | None = None) -> None:
        self.params = p = params or AFLW2000Params()
        root = expand_path(p.root)
        if not root.is_dir():
            raise DataError(f"AFLW2000-3D folder not found: {root}")
        mats = sorted(root.glob("*.mat"))[p.start : p.stop]
        if not mats:
            raise DataError(f"{root}: no .mat files")

        def read_one(f: Path) -> tuple[Path, np.ndarray, dict]:
            image = _image_beside(f)
            mat = read_mat(f, ("pt3d_68", "Pose_Para"), _MORPHABLE)
            pts = _shaped(f, "pt3d_68", mat["pt3d_68"], ((3, 68),)).T.copy()
            pts[:, :2] -= 1.0  # MATLAB pixel indices -> 0-based
            return image, pts, {"annotation": str(f), **_params_meta(_pose(f, mat["Pose_Para"]), mat)}

        self._read_all(mats, read_one, p.on_error, "aflw2000_3d", p.split, root)


@attrs.frozen
class W300LPParams:
    """Attributes:
    root: the 300W_LP folder; subsets: its image folders (the ``*_Flip`` mirrors have no
        ``landmarks/`` files in the release and are left out unless listed); start/stop slice the
        sorted faces of all subsets together.
    on_error: ``raise`` or ``skip``.
    """

    root: str = "${FACEREP_DATA}/300w_lp"
    subsets: tuple[str, ...] = ("AFW", "HELEN", "IBUG", "LFPW")
    start: int = 0
    stop: int | None = None
    split: str = "train"
    on_error: Literal["raise", "skip"] = "raise"


class W300LP(_Face3DSet):
    def __init__(self, params: W300LPParams | None = None) -> None:
        self.params = p = params or W300LPParams()
        root = expand_path(p.root)
        if not root.is_dir():
            raise DataError(f"300W-LP folder not found: {root}")
        mats = []
        for subset in p.subsets:
            folder = root / subset
            if not folder.is_dir():
                raise DataError(f"300W-LP subset folder not found: {folder} (subsets: {', '.join(p.subsets)})")
            mats += [(subset, f) for f in sorted(folder.glob("*.mat"))]
        mats = mats[p.start : p.stop]
        if not mats:
            raise DataError(f"{root}: no .mat files in {', '.join(p.subsets)}")

        def read_one(item: tuple[str, Path]) -> tuple[Path, np.ndarray, dict]:
            subset, f = item
            image = _image_beside(f)
            lm_file = root / "landmarks" / subset / f"{f.stem}_pts.mat"
            if not lm_file.is_file():
                raise DataError(f"{f}: its landmarks file is missing ({lm_file})")
            xy = _shaped(lm_file, "pts_3d", read_mat(lm_file, ("pts_3d",))["pts_3d"], ((68, 2), (2, 68)))
            xy = xy.T if xy.shape == (2, 68) else xy
            mat = read_mat(f, ("Pose_Para",), _MORPHABLE)
            pts = np.concatenate([xy - 1.0, np.full((68, 1), np.nan)], 1)  # depth: not in the release
            return image, pts, {"annotation": str(lm_file), "subset": subset, **_params_meta(_pose(f, mat["Pose_Para"]), mat)}

        self._read_all(mats, read_one, p.on_error, "300w_lp", p.split, root)
