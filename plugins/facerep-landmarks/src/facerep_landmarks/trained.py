"""A landmarks model trained by this plugin's task, run on new faces (no annotation, no detector).

An evaluation entry of the ``landmarks.alignment`` task with ``save_models: true`` writes each
trained model (``facerep.eval.saved``). :class:`TrainedLandmarker` builds one again and predicts the
landmarks of new images:

- a model trained with ``crop: image`` (the whole aligned face image is its input) runs on the
  images as they are: this is the landmark source to train for aligned crops (CelebA, LFW, UTKFace,
  the 300-W crops), since it sees at inference exactly what it saw in training;
- a model trained with ``crop: landmarks`` (the benchmarks' crop around the true landmark box) needs
  a box: the crop is taken around ``start_box`` (fractions of the image, the same for every image),
  and each of ``refine`` further passes crops around the box of the previous pass's points (a
  cascade in the manner of cascaded regression). Refinement is off by default because the models
  trainable here pull towards the mean shape, so each pass shrank the box: with ResNet-18s
  fine-tuned on the 237 AFW training faces (NME 0.145-0.149 from the true boxes), NME went from
  0.173 with one pass from the central box to 0.172-0.183 after one refinement and 0.183-0.204
  after two (``docs/methods/lafs.md``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from facerep.data.geometry import landmark_box
from facerep.errors import ConfigError
from facerep.types import Sample

__all__ = ["TrainedLandmarker"]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


class TrainedLandmarker:
    """``rgb (H, W, 3) uint8 -> ((K, 2) float32 pixel (x, y), how)``; :meth:`predict` for many images."""

    def __init__(self, path: str | Path, *, refine: int = 0, start_box: tuple[float, float, float, float] = (0.2, 0.25, 0.8, 0.85),
                 batch_size: int = 64, device: str = "cpu", plugins: Any = None) -> None:
        from facerep.eval.saved import load_trained

        self.model = load_trained(path, plugins)
        if self.model.meta["task"].get("name") != "landmarks.alignment":
            raise ConfigError(f"{path}: a {self.model.meta['task'].get('name')} model, not a landmarks.alignment one")
        x0, y0, x1, y1 = start_box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ConfigError(f"start_box {start_box}: expected fractions x0 < x1, y0 < y1 in [0, 1]")
        if refine < 0:
            raise ConfigError(f"refine: {refine} passes; expected 0 or more")
        self.refine, self.start_box, self.batch_size, self.device = refine, np.asarray(start_box, np.float64), batch_size, device
        self.n_landmarks = int(self.model.meta["head_spec"]["n_points"])
        self.whole_image = self.model.task.params.crop == "image"  # no box needed, nothing to refine
        weights = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(path)
        self.id = f"model-{_file_hash(weights.expanduser())}" + ("" if self.whole_image else f"-{start_box}-r{refine}")

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """``(N, K, 2)`` points for ``images`` (each ``(H, W, 3)`` uint8 RGB)."""
        from facerep.eval.saved import predict_samples

        boxes = [self.start_box * np.array([w, h, w, h], np.float64) for h, w in (im.shape[:2] for im in images)]
        for _ in range(1 if self.whole_image else self.refine + 1):
            samples = [Sample(image=im, meta={"landmark_box": b}) for im, b in zip(images, boxes, strict=True)]
            points = np.stack(predict_samples(self.model, samples, batch_size=self.batch_size, device=self.device))
            boxes = [landmark_box(p) for p in points]
        return points.astype(np.float32)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, str]:
        return self.predict([rgb])[0], "model"
