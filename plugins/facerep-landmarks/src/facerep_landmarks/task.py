"""Landmark localisation (spec §2.5, §7.1 T2): a landmark-aware square crop around the face,
a heatmap (FaRL) or regression head, predictions mapped back to the original image, NME there.

The face box is the ground-truth landmarks' bounding box, enlarged by ``crop_scale`` (the way the
300-W / HRNet protocols derive their boxes); training adds FaRL's random similarity transform:
rotation, shift and scale drawn uniformly within ``+-sigma`` (its ``*_normal: false``). No flip.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import cv2
import numpy as np
import torch
from torch import nn

from facerep.data.geometry import box_crop_matrix, invert_affine, landmark_box, transform_points, warp
from facerep.data.subset import label_array
from facerep.errors import DataError
from facerep.eval.outcomes import ItemOutcomes
from facerep.eval.task import TaskBase
from facerep.protocols import Backbone, FaceDataset
from facerep.types import Prepared, Sample
from facerep_landmarks.heads import HeatmapHead, RegressionHead
from facerep_landmarks.metrics import landmark_metrics, nme, normaliser

__all__ = ["AlignmentParams", "LandmarkAlignment"]


@attrs.frozen
class AlignmentParams:
    """Attributes:
    input_size: side of the network input crop.
    crop: ``landmarks``: a square around the landmark box (the benchmarks' protocol; a new face then
        needs a box estimate, ``meta["landmark_box"]``); ``image``: the whole image (longer side,
        centred), for aligned face crops, so that a trained model runs on new images as they are
        (a landmark source for LAFS, ``facerep_landmarks.trained``).
    head: ``heatmap`` (FaRL) or ``regression``; the linear protocol always uses the regression head.
    channels: decoder width of the heatmap head.
    crop_scale: crop side = longest side of the landmark box x this (1.25 suits 68 points; 5-point
        sets, whose box spans eyes to mouth only, need about 2.6).
    rotation, shift, scale: training augmentation bounds (FaRL: 0.174 rad, 0.05, 0.1).
    normaliser: NME normaliser of the primary metric (``inter_ocular``, ``inter_pupil``, ``box``,
        ``diagonal``); threshold: for FR and AUC (0.1 for 300-W/WFLW inter-ocular, 0.07 for AFLW box).
    """

    input_size: int = 112
    crop: Literal["landmarks", "image"] = "landmarks"
    head: Literal["heatmap", "regression"] = "heatmap"
    channels: int = 128
    crop_scale: float = 1.25
    rotation: float = 0.174
    shift: float = 0.05
    scale: float = 0.1
    normaliser: Literal["inter_ocular", "inter_pupil", "box", "diagonal"] = "inter_ocular"
    threshold: float = 0.1


class LandmarkAlignment(TaskBase):
    name = "landmarks"
    label = "landmarks"
    probe_label = None
    #: the linear probe regresses the normalised crop coordinates in closed form (ridge, chosen by
    #: leave-one-out; the mean shape when the features add nothing) instead of training the head
    probe_target = "points"
    higher_is_better = False

    def __init__(self, params: AlignmentParams | None = None) -> None:
        self.params = p = params or AlignmentParams()
        self.input_size = p.input_size
        self.primary_metric = f"nme_{p.normaliser}"

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        p, s = self.params, self.input_size
        h, w = sample.image.shape[:2]
        if p.crop == "image":  # pixel edges of the whole image: its centre goes to the crop's centre
            box, base = np.array([-0.5, -0.5, w - 0.5, h - 0.5]), 1.0
        elif sample.landmarks is not None:
            box, base = landmark_box(np.asarray(sample.landmarks, np.float64)), p.crop_scale
        elif not train and "landmark_box" in sample.meta:  # a new face: the caller's estimate of its landmark box
            box, base = np.asarray(sample.meta["landmark_box"], np.float64), p.crop_scale
        else:
            raise DataError(f"{sample.meta.get('path', '?')}: no landmarks")
        rot, shift, scale = 0.0, (0.0, 0.0), base
        if train:
            if sample.landmarks is None:
                raise DataError(f"{sample.meta.get('path', '?')}: no landmarks")
            rot = rng.uniform(-p.rotation, p.rotation)
            shift = tuple(rng.uniform(-p.shift, p.shift, 2))
            scale = base * (1 + rng.uniform(-p.scale, p.scale))
        m = box_crop_matrix(box, s, scale=scale, rotation=rot, shift=shift)
        if sample.landmarks is None:
            return Prepared(warp(sample.image, m, s), {}, {"matrix": m, "path": sample.meta.get("path")})
        pts = np.asarray(sample.landmarks, np.float64)
        target = (transform_points(pts, m) + 0.5) / s  # normalised, pixel centres at +0.5
        return Prepared(warp(sample.image, m, s), {"points": target.astype(np.float32)}, {"matrix": m, "path": sample.meta.get("path")})

    def head_spec(self, train: FaceDataset) -> dict[str, Any]:
        return {"n_points": len(label_array(train, "landmarks")[0])}

    def build_head(self, backbone: Backbone, train: FaceDataset | None, *, linear: bool, spec: dict[str, Any] | None = None) -> nn.Module:
        k = int((spec or self.head_spec(train))["n_points"])
        if linear or self.params.head == "regression":
            return RegressionHead(backbone.embed_dim, k)
        return HeatmapHead(list(backbone.layer_dims), k, vit=bool(getattr(backbone, "is_vit", False)), channels=self.params.channels)

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        pts = torch.stack([o["points"] for o in outputs]).mean(0).numpy()  # (B, K, 2) normalised
        s = self.input_size
        return [transform_points(p * s - 0.5, invert_affine(m["matrix"])) for p, m in zip(pts, metas, strict=True)]

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        gt = label_array(dataset, "landmarks").astype(np.float64)
        scheme = dataset.info.landmark_scheme or str(gt.shape[1])
        boxes = dataset.boxes() if hasattr(dataset, "boxes") else None  # AFLW-19/WFLW: the annotated face box
        return landmark_metrics(np.stack(predictions).astype(np.float64), gt, scheme, self.params.threshold, self.params.normaliser, boxes)

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        """Per face: its NME under the primary normaliser (the metric is their mean)."""
        gt = label_array(dataset, "landmarks").astype(np.float64)
        scheme = dataset.info.landmark_scheme or str(gt.shape[1])
        boxes = dataset.boxes() if hasattr(dataset, "boxes") and self.params.normaliser in ("box", "diagonal") else None
        norm = normaliser(gt, self.params.normaliser, scheme, boxes)
        return ItemOutcomes(nme(np.stack(predictions).astype(np.float64), gt, norm), unit="face")

    def draw(self, sample: Sample, prediction: Any) -> np.ndarray:
        """Ground truth in green, prediction in red."""
        img = np.ascontiguousarray(sample.image.copy())
        r = max(1, round(max(img.shape[:2]) / 150))
        for pts, colour in ((sample.landmarks, (0, 255, 0)), (prediction, (255, 0, 0))):
            for x, y in np.asarray(pts):
                cv2.circle(img, (round(float(x)), round(float(y))), r, colour, -1)
        return img
