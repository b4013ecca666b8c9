"""3D face alignment (FRL's fifth task, Bulat et al. ECCV 2022 §4; 3DDFA's protocol): a square crop
around the face's landmark box, a head regressing the 68 landmarks in 3D, predictions mapped back to
the original image, NME per yaw bin there.

Targets live in the crop's normalised frame: x, y as the 2D landmarks task (pixel centres at +0.5,
divided by the crop side), depth z scaled by the same factor and centred on the face's mean depth.
An unknown depth (300W-LP without a 3DMM basis) is NaN and left out of the loss. Training adds the
landmarks task's random similarity transform (in-plane rotation, shift, scale; no flip).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from facerep.data.geometry import box_crop_matrix, invert_affine, landmark_box, transform_points, warp
from facerep.data.subset import label_array
from facerep.errors import DataError
from facerep.eval.outcomes import ItemOutcomes
from facerep.eval.task import HeadBase, TaskBase
from facerep.protocols import Backbone, FaceDataset
from facerep.types import LossOutput, Prepared, Sample
from facerep_face3d.metrics import YAW_BINS, face3d_metrics, nme, normaliser, yaw_bin

__all__ = ["Face3DAlignment", "Face3DParams", "PointRegressionHead3D", "masked_point_loss"]


@attrs.frozen
class Face3DParams:
    """Attributes:
    input_size: side of the network input crop.
    crop_scale: crop side = longest side of the landmark box x this.
    rotation, shift, scale: training augmentation bounds (radians, crop fraction, relative).
    hidden: width of the head's hidden layer (None: one linear map, also the linear protocol's head).
    basis: a 3DMM basis ``.npz`` (``facerep_face3d.morphable``): the head then regresses shape,
        expression and pose parameters and the landmarks follow from them; None: the 68 points directly.
    """

    input_size: int = 112
    crop_scale: float = 1.25
    rotation: float = 0.174
    shift: float = 0.05
    scale: float = 0.1
    hidden: int | None = 512
    basis: str | None = None


def masked_point_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over points of the Euclidean distance, over the coordinates the target knows (not NaN)."""
    known = ~torch.isnan(target)
    diff = torch.where(known, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return torch.linalg.vector_norm(diff, dim=-1).mean()


class PointRegressionHead3D(HeadBase):
    """Pooled vector -> ``(K, 3)`` normalised points; starts at the crop centre, depth 0."""

    def __init__(self, dim: int, n_points: int, hidden: int | None = None) -> None:
        super().__init__()
        self.n_points = n_points
        self.fc = nn.Linear(dim, 3 * n_points) if not hidden else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(),
                                                                                 nn.Linear(hidden, 3 * n_points))
        last = self.fc if isinstance(self.fc, nn.Linear) else self.fc[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([0.5, 0.5, 0.0]).repeat(n_points))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(inputs["pooled"]).float().view(-1, self.n_points, 3)

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        pl = masked_point_loss(output, targets["points"].float())
        return LossOutput(pl, {"point": float(pl.detach())})


def _points3d(sample: Sample) -> np.ndarray:
    pts = sample.meta.get("points3d")
    if pts is not None:
        return np.asarray(pts, np.float64)
    if sample.landmarks is None:
        raise DataError(f"{sample.meta.get('path', '?')}: no landmarks")
    xy = np.asarray(sample.landmarks, np.float64)  # a 2D-only reader: depth unknown
    return np.concatenate([xy, np.full((len(xy), 1), np.nan)], 1)


def _points3d_array(dataset: FaceDataset) -> np.ndarray:
    fast = label_array(dataset, "points3d") if hasattr(dataset, "label_array") else None
    if fast is not None:
        return np.asarray(fast, np.float64)
    return np.stack([_points3d(dataset[i]) for i in range(len(dataset))])


def _yaw_array(dataset: FaceDataset) -> np.ndarray:
    fast = label_array(dataset, "yaw_deg") if hasattr(dataset, "label_array") else None
    if fast is not None:
        return np.asarray(fast, np.float64)
    yaws = []
    for i in range(len(dataset)):
        meta = dataset[i].meta
        if "yaw_deg" not in meta:
            raise DataError(f"{dataset.info.name}: sample {i} ({meta.get('path', '?')}) has no head pose (meta 'yaw_deg'); "
                            f"the yaw bins need it (readers: face3d.aflw2000_3d, face3d.300w_lp)")
        yaws.append(meta["yaw_deg"])
    return np.asarray(yaws, np.float64)


class Face3DAlignment(TaskBase):
    name = "face3d"
    label = "landmarks"
    probe_label = None
    primary_metric = "nme_mean"
    higher_is_better = False

    def __init__(self, params: Face3DParams | None = None) -> None:
        self.params = p = params or Face3DParams()
        self.input_size = p.input_size

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        p, s = self.params, self.input_size
        pts = _points3d(sample)
        rot, shift, scale = 0.0, (0.0, 0.0), p.crop_scale
        if train:
            rot = rng.uniform(-p.rotation, p.rotation)
            shift = tuple(rng.uniform(-p.shift, p.shift, 2))
            scale = p.crop_scale * (1 + rng.uniform(-p.scale, p.scale))
        m = box_crop_matrix(landmark_box(pts[:, :2]), s, scale=scale, rotation=rot, shift=shift)
        k = np.sqrt(abs(np.linalg.det(m[:, :2])))  # pixels of the crop per pixel of the image
        xy = (transform_points(pts[:, :2], m) + 0.5) / s
        z = (pts[:, 2] - np.nanmean(pts[:, 2]) if not np.isnan(pts[:, 2]).all() else pts[:, 2]) * k / s
        target = np.concatenate([xy, z[:, None]], 1).astype(np.float32)
        return Prepared(warp(sample.image, m, s), {"points": target}, {"matrix": m, "path": sample.meta.get("path")})

    def head_spec(self, train: FaceDataset) -> dict[str, Any]:
        marks = label_array(train, "landmarks") if hasattr(train, "label_array") else None
        return {"n_points": int((marks if marks is not None else _points3d_array(train)).shape[1])}

    def build_head(self, backbone: Backbone, train: FaceDataset | None, *, linear: bool, spec: dict[str, Any] | None = None) -> nn.Module:
        k = int((spec or self.head_spec(train))["n_points"])
        hidden = None if linear else self.params.hidden
        if self.params.basis is not None:
            from facerep.data.folder import expand_path
            from facerep_face3d.morphable import MorphableBasis, MorphableHead

            if k != 68:
                raise DataError(f"task.params.basis: the 3DMM head predicts 68 landmarks, the data has {k}")
            return MorphableHead(backbone.embed_dim, MorphableBasis(expand_path(self.params.basis)), crop_scale=self.params.crop_scale,
                                 hidden=hidden)
        return PointRegressionHead3D(backbone.embed_dim, k, hidden=hidden)

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[Any]:
        pts = torch.stack([o.float() for o in outputs]).mean(0).numpy().astype(np.float64)  # (B, K, 3) normalised
        s, out = self.input_size, []
        for p, meta in zip(pts, metas, strict=True):
            m = meta["matrix"]
            k = np.sqrt(abs(np.linalg.det(m[:, :2])))
            xy = transform_points(p[:, :2] * s - 0.5, invert_affine(m))
            out.append(np.concatenate([xy, (p[:, 2] * s / k)[:, None]], 1))
        return out

    def pseudo_label(self, sample: Sample, prediction: np.ndarray) -> Sample:
        """Self-distillation: the teacher's 3D points become the sample's landmarks and depth."""
        pts = np.asarray(prediction, np.float32)
        sample.landmarks = pts[:, :2].copy()
        sample.meta["points3d"] = pts
        return sample

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        return face3d_metrics(np.stack(predictions), _points3d_array(dataset), _yaw_array(dataset))

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        """Per face: its 2D NME (box normaliser) in the column of its yaw bin; ``nme_mean`` is the
        mean over the bins that have faces of each bin's mean."""
        pred, gt = np.stack(predictions).astype(np.float64), _points3d_array(dataset).astype(np.float64)
        per_face = nme(pred[..., :2], gt[..., :2], normaliser(gt[..., :2], "box", "68"))
        member = (yaw_bin(_yaw_array(dataset))[:, None] == np.arange(len(YAW_BINS))[None, :]).astype(np.float64)
        return ItemOutcomes(member * per_face[:, None], member, unit="face")
