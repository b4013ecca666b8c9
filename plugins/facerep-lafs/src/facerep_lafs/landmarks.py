"""Where LAFS's landmarks come from, computed once per image and cached.

LAFS (``specs/methods.md`` §5.2-5.3) takes its landmarks from a frozen landmark CNN learned inside a
supervised Part fViT (196 points, no annotations). That network is not public in a usable form, so
the source here is explicit:

- ``dlib68``: dlib's HOG face detector + its 68-point shape predictor (iBUG 300-W scheme), offline
  (``pip install facerep-lafs[dlib]``: the ``dlib-bin`` wheel and ``face-recognition-models``, whose
  predictor was trained on iBUG 300-W: **not for commercial use**). ~11 ms per 200 px face on one
  core; an image without a detection gets the predictor on a fixed central box (``fallback:
  centre``, for aligned crops) or is left out (``fallback: drop``).
- ``model``: a landmarks model trained with the landmarks task plugin (an evaluation entry of
  ``landmarks.alignment`` with ``save_models: true`` writes ``models/*/model.safetensors``), run by
  ``facerep_landmarks.trained.TrainedLandmarker``: no detector, one crop around ``start_box``
  (fractions of the image; optionally refined around its own predictions); its point count sets
  the scheme (68, 5, ...).
- ``file``: a ``.npz`` with ``points (N, L, 2)`` (and optionally ``ok (N,)``) written by any tool, in
  the dataset's order.

:class:`LandmarkedDataset` (``lafs.landmarked``) wraps any facerep dataset, computes the landmarks
of every image once (cached as ``.npz`` under ``cache_dir``, keyed by the dataset, its size, a hash
of its first and last images and the source) and serves the samples with ``landmarks`` set; images
without landmarks are left out and counted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from facerep.config import in_range
from facerep.errors import ConfigError, DataError
from facerep.types import Sample

__all__ = ["Dlib68Landmarker", "LandmarkedDataset", "LandmarkedParams", "build_landmarker", "flip_order"]

START_BOX = (0.2, 0.25, 0.8, 0.85)  # TrainedLandmarker's default: aligned face crops


def flip_order(scheme: str) -> np.ndarray | None:
    """The permutation a mirror image applies to the landmark indices of ``scheme`` (the point
    count, "68" or "5"; the landmarks plugin's pairs), or None for a scheme without pairs (no flips then)."""
    from facerep_landmarks.schemes import FLIP_PAIRS

    pairs = FLIP_PAIRS.get(scheme)
    if pairs is None:
        return None
    order = np.arange(int(scheme))
    for a, b in pairs:
        order[a], order[b] = b, a
    return order


def _model_file(name: str) -> str:
    # face_recognition_models' __init__ imports pkg_resources (absent from new setuptools): locate
    # its data without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("LAFS landmarks source dlib68 needs pip install 'facerep-lafs[dlib]' (dlib-bin, face-recognition-models)")
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    if not path.is_file():
        raise ConfigError(f"{path}: dlib model file missing; reinstall face-recognition-models==0.3.0")
    return str(path)


class Dlib68Landmarker:
    """``rgb (H, W, 3) uint8 -> (68, 2) float32`` pixel ``(x, y)``, or None; ``how`` says which box."""

    n_landmarks = 68

    def __init__(self, upsample: int = 1, fallback: str = "centre") -> None:
        try:
            import dlib
        except ImportError:
            raise ConfigError("LAFS landmarks source dlib68 needs pip install 'facerep-lafs[dlib]' (dlib-bin)") from None
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))
        self.upsample, self.fallback = upsample, fallback
        self.id = f"dlib68-up{upsample}-{fallback}"

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray | None, str]:
        rgb = np.ascontiguousarray(rgb)
        rects, scores, _ = self.detector.run(rgb, self.upsample, 0.0)
        if rects:
            rect, how = rects[int(np.argmax(scores))], "detected"
        elif self.fallback == "centre":  # an aligned crop: the face box of CelebA/UTKFace-style alignment
            h, w = rgb.shape[:2]
            rect, how = self.dlib.rectangle(round(0.15 * w), round(0.2 * h), round(0.85 * w), round(0.85 * h)), "centre box"
        else:
            return None, "no face"
        shape = self.predictor(rgb, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32), how


def _trained_landmarker(path: str | None, refine: int, start_box: Any, where: str) -> Any:
    from facerep.data.folder import expand_path
    from facerep_landmarks.trained import TrainedLandmarker

    if not path:
        raise ConfigError(f"{where}.path: source 'model' needs the model.safetensors a landmarks evaluation saved (save_models: true)")
    return TrainedLandmarker(expand_path(str(path)), refine=refine, start_box=tuple(start_box))


def build_landmarker(cfg: dict[str, Any]) -> Any:
    """The landmarker a ``lafs.landmark_vit`` runs on every image it is given: ``{source: dlib68,
    upsample: 1}`` (without a detection: the central box, since it must return points) or
    ``{source: model, path: .../model.safetensors, start_box: [x0, y0, x1, y1], refine: 0}``."""
    cfg = dict(cfg)
    source = cfg.pop("source", "dlib68")
    known = {"dlib68": {"upsample"}, "model": {"path", "refine", "start_box"}}
    if source not in known:
        raise ConfigError(f"backbone.params.landmarker.source: {source!r} cannot run on new images; use dlib68 or model")
    unknown = set(cfg) - known[source]
    if unknown:
        raise ConfigError(f"backbone.params.landmarker: unknown keys {sorted(unknown)} for source {source} "
                          f"(known: source, {', '.join(sorted(known[source]))})")
    if source == "model":
        where = "backbone.params.landmarker"
        return _trained_landmarker(cfg.get("path"), int(cfg.get("refine", 0)), cfg.get("start_box", START_BOX), where)
    return Dlib68Landmarker(int(cfg.get("upsample", 1)), fallback="centre")


@attrs.frozen
class LandmarkedParams:
    """Attributes:
    dataset: the wrapped dataset as ``{name, params}``.
    source: ``dlib68``, ``model`` or ``file``.
    path: the ``.npz`` for ``source: file``; the ``model.safetensors`` for ``source: model``.
    upsample, fallback: dlib68's detector upsampling and what to do without a detection (``centre``, ``drop``).
    start_box, refine: ``source: model``'s crop (fractions of the image) and passes after the first,
        each cropping around the previous points (``facerep_landmarks.trained``).
    cache_dir: where computed landmarks are kept.
    """

    dataset: dict[str, Any]
    source: str = attrs.field(default="dlib68", validator=attrs.validators.in_(("dlib68", "model", "file")))
    path: str | None = None
    upsample: int = attrs.field(default=1, validator=in_range(0, 4, hi_inclusive=True))
    fallback: str = attrs.field(default="centre", validator=attrs.validators.in_(("centre", "drop")))
    start_box: tuple[float, float, float, float] = (0.2, 0.25, 0.8, 0.85)
    refine: int = attrs.field(default=0, validator=in_range(0, 8, hi_inclusive=True))
    cache_dir: str = "~/.cache/facerep/lafs"


def _fingerprint(ds: Any, source: str) -> str:
    h = hashlib.sha256(f"{ds.info.name}|{len(ds)}|{source}".encode())
    for i in sorted({0, 1, 2, len(ds) // 2, len(ds) - 2, len(ds) - 1} & set(range(len(ds)))):
        h.update(np.ascontiguousarray(ds[i].image).tobytes())
    return h.hexdigest()[:16]


class LandmarkedDataset:
    """The wrapped dataset's samples that have landmarks, with ``sample.landmarks`` set."""

    def __init__(self, params: LandmarkedParams) -> None:
        from facerep.build import build, resolve
        from facerep.config import ComponentConfig, structure
        from facerep.data.folder import expand_path

        comp = structure(params.dataset, ComponentConfig, path="data.params.dataset")
        self.inner = build(resolve("dataset", comp, "data.params.dataset"))
        if params.source == "file":
            if not params.path:
                raise ConfigError("data.params.path: source 'file' needs the .npz of landmarks")
            points, ok = self._read(expand_path(params.path))
            self.flip_order = flip_order(str(points.shape[1]))
            self.report = {"source": str(params.path)}
        else:
            if params.source == "model":
                landmarker = _trained_landmarker(params.path, params.refine, params.start_box, "data.params")
            else:
                landmarker = Dlib68Landmarker(params.upsample, params.fallback)
            self.flip_order = flip_order(str(landmarker.n_landmarks))
            cache = expand_path(params.cache_dir) / f"{self.inner.info.name}-{_fingerprint(self.inner, landmarker.id)}.npz"
            if cache.is_file():
                points, ok = self._read(cache)
            else:
                points, ok, hows = self._compute(landmarker)
                self._write(cache, points, ok, hows)
            self.report = {"source": landmarker.id, "cache": str(cache)}
        if len(points) != len(self.inner):
            raise DataError(f"landmarks for {len(points)} images, dataset {self.inner.info.name} has {len(self.inner)}")
        self.points, self.index = points, np.flatnonzero(ok)
        self.n_landmarks = int(points.shape[1])
        self.report.update(images=len(self.inner), with_landmarks=int(ok.sum()))
        if not len(self.index):
            raise DataError(f"{self.inner.info.name}: no image got landmarks ({self.report})")
        self.info = attrs.evolve(self.inner.info, labels=tuple(dict.fromkeys((*self.inner.info.labels, "landmarks"))))

    def _compute(self, landmarker: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
        n = len(self.inner)
        points, ok, hows = np.zeros((n, landmarker.n_landmarks, 2), np.float32), np.zeros(n, bool), []
        if hasattr(landmarker, "predict"):  # a network: batches of images, a point set for every one
            for start in range(0, n, 256):
                stop = min(n, start + 256)
                points[start:stop] = landmarker.predict([self.inner[i].image for i in range(start, stop)])
            return points, np.ones(n, bool), ["model"] * n
        for i in range(n):
            p, how = landmarker(self.inner[i].image)
            hows.append(how)
            if p is not None:
                points[i], ok[i] = p, True
        return points, ok, hows

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                points = z["points"].astype(np.float32)
                ok = z["ok"].astype(bool) if "ok" in z else np.ones(len(points), bool)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path}: not a landmarks .npz with 'points (N, L, 2)' ({exc})") from None
        if points.ndim != 3 or points.shape[2] != 2 or ok.shape != (len(points),):
            raise DataError(f"{path}: 'points' must be (N, L, 2) and 'ok' (N,), got {points.shape} and {ok.shape}")
        return points, ok

    @staticmethod
    def _write(path: Path, points: np.ndarray, ok: np.ndarray, hows: list[str]) -> None:
        from facerep.workdir import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, points=points, ok=ok)
        counts = {h: hows.count(h) for h in sorted(set(hows))}
        path.with_suffix(".json").write_text(json.dumps({"images": len(ok), "with_landmarks": int(ok.sum()), "boxes": counts}))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> Sample:
        i = int(self.index[index])
        sample = self.inner[i]
        sample.landmarks = self.points[i].copy()
        return sample
