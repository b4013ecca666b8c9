"""LAFS (Sun, Feng, Patras, Tzimiropoulos, "LAFS: Landmark-based Facial Self-supervised Learning for
Face Recognition", CVPR 2024, arXiv 2403.08161; ``specs/methods.md`` §5.5-5.6 and §8.5): DINO over
views made of landmark patches. Per step, for each face:

1. ``2 + 8`` geometric crops, each augmented photometrically; the landmarks of the clean crop,
   perturbed by ``N(0, 5^2)`` px; the two global views keep all landmarks, each local view a subset of
   36 drawn with replacement (:class:`~facerep_lafs.views.LandmarkViews`);
2. tokens = 8 x 8 patches sampled at those points from the augmented crop, through a landmark ViT
   (:class:`~facerep_lafs.landmark_vit.LandmarkViT`): the student sees every view, the EMA teacher
   the two globals;
3. ``L`` = DINO's cross-entropy between the teacher's centred, sharpened distribution over the
   prototypes and the student's, over (teacher global, other student view) pairs
   (:mod:`facerep.prototypes`); the teacher temperature goes *down* from 0.07 to 0.04 over the
   warm-up (the official code's defaults, the reverse of DINO's), ``tau_s`` 0.1, centre momentum 0.9;
4. EMA teacher, momentum 0.996 -> 1 (cosine); the teacher is exported.

Fixed here against the official code (§5.11): the teacher is in eval mode (no dropout or drop-path
on the targets); landmarks come from an explicit, cached source.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch import nn

from facerep.config import in_range, non_negative, positive
from facerep.data.augment import dino_colour_augments
from facerep.errors import ConfigError
from facerep.prototypes import PrototypeDistillation
from facerep.types import LossOutput
from facerep_lafs.views import LandmarkViews

__all__ = ["LAFSObjective", "LAFSParams"]


@attrs.frozen
class LAFSParams:
    """Defaults: the official code's (``specs/methods.md`` §5.4-5.6).

    Attributes:
        n_prototypes, hidden_dim, bottleneck_dim: the DINO head (100,000 prototypes in the paper).
        student_temperature, teacher_temperature, warmup_teacher_temperature,
            teacher_temperature_warmup_steps: tau_s; tau_t from the warm-up value to the final one.
        centre_momentum, momentum: the centre's and the teacher's (cosine to 1) momenta.
        freeze_prototypes_steps: the prototypes get no update for this many first steps (1 epoch).
        local_crops, local_landmarks: local views and their landmark count (36 of 196 in the paper).
        crop_scale, sigma, flip_p: geometric crops, landmark noise (px at 112 px), mirror probability.
        flip_scheme: the landmark scheme whose mirror pairs re-order flipped points ("68"); None: no flips.
        prototype_init: ``trunc_normal`` or ``linear`` (DINO's and LAFS's ``nn.Linear`` default, row norm
            ~0.577): :class:`~facerep.prototypes.PrototypeHead`.
    """

    n_prototypes: int = attrs.field(default=100_000, validator=positive)
    hidden_dim: int = attrs.field(default=2048, validator=positive)
    bottleneck_dim: int = attrs.field(default=256, validator=positive)
    student_temperature: float = attrs.field(default=0.1, validator=positive)
    teacher_temperature: float = attrs.field(default=0.04, validator=positive)
    warmup_teacher_temperature: float = attrs.field(default=0.07, validator=positive)
    teacher_temperature_warmup_steps: int = attrs.field(default=0, validator=non_negative)
    centre_momentum: float = attrs.field(default=0.9, validator=in_range(0, 1, hi_inclusive=False))
    momentum: float = attrs.field(default=0.996, validator=in_range(0, 1, hi_inclusive=True))
    freeze_prototypes_steps: int = attrs.field(default=0, validator=non_negative)
    local_crops: int = attrs.field(default=8, validator=non_negative)
    local_landmarks: int = attrs.field(default=36, validator=positive)
    crop_scale: tuple[float, float] = (0.4, 1.0)
    sigma: float = attrs.field(default=5.0, validator=non_negative)
    flip_p: float = attrs.field(default=0.5, validator=in_range(0, 1, hi_inclusive=True))
    flip_scheme: str | None = "68"
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    prototype_init: Literal["trunc_normal", "linear"] = "trunc_normal"

    @classmethod
    def tiny(cls) -> LAFSParams:
        return cls(n_prototypes=32, hidden_dim=32, bottleneck_dim=16, local_crops=2, local_landmarks=8,
                   teacher_temperature_warmup_steps=4, freeze_prototypes_steps=1)

    @classmethod
    def tiny_backbone(cls) -> dict[str, Any]:
        """The contract suites' backbone: a small landmark ViT over the synthetic faces' 68 points."""
        return {"name": "lafs.landmark_vit", "params": {"n_landmarks": 68, "patch": 4, "input_size": 32, "embed_dim": 32, "depth": 2,
                                                         "heads": 2, "mlp_ratio": 2.0, "drop_path_rate": 0.0, "dropout": 0.0}}


class LAFSObjective(PrototypeDistillation):
    """Student, EMA teacher, head, centre and schedules: :class:`facerep.prototypes.PrototypeDistillation`."""

    def __init__(self, params: LAFSParams, *, backbone: nn.Module) -> None:
        if not hasattr(backbone, "forward_points"):
            raise ConfigError("backbone: LAFS trains a landmark ViT (name: lafs.landmark_vit), "
                              f"got {type(backbone).__name__}")
        if params.local_landmarks > backbone.params.n_landmarks:
            raise ConfigError(f"objective.params.local_landmarks: {params.local_landmarks} > the backbone's n_landmarks "
                              f"{backbone.params.n_landmarks}")
        super().__init__(params, backbone)

    def view_transform(self) -> LandmarkViews:
        from facerep_lafs.landmarks import flip_order

        p, bb = self.params, self.backbone.params
        # flips are geometric here (the points are re-ordered with them): none in the colour chains
        colours = dino_colour_augments(jitter=tuple(p.jitter), flip_p=0.0, blur_p=tuple(p.blur_p), blur_sigma=tuple(p.blur_sigma))
        order = flip_order(p.flip_scheme) if p.flip_scheme else None
        if order is not None and len(order) != bb.n_landmarks:
            raise ConfigError(f"objective.params.flip_scheme: {p.flip_scheme!r} has {len(order)} points, the backbone {bb.n_landmarks}")
        return LandmarkViews(size=bb.input_size, scale=tuple(p.crop_scale), global_crops=2, local_crops=p.local_crops,
                             local_landmarks=p.local_landmarks, sigma=p.sigma, flip_p=p.flip_p, flip_order=order, colours=colours,
                             n_landmarks=bb.n_landmarks)

    @staticmethod
    def _logits(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """Views of one kind (same size, same landmark count) in one backbone call: ``(V * B, K)``."""
        v, b = points.shape[1], points.shape[0]
        x = torch.cat(views)  # (V * B, 3, H, W), view-major
        pts = points.transpose(0, 1).reshape(v * b, *points.shape[2:])  # (B, V, N, 2) -> (V * B, N, 2)
        return head(backbone.forward_points(x, pts).pooled)

    def forward(self, views: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None) -> LossOutput:
        if extras is None or "global_points" not in extras:
            raise ValueError("LAFS needs extras 'global_points' (and 'local_points') from its view transform (facerep >= 1.2 runner)")
        g = extras["global_points"].shape[1]
        student = [self._logits(self.backbone, self.head, views[:g], extras["global_points"])]
        if len(views) > g:
            student.append(self._logits(self.backbone, self.head, views[g:], extras["local_points"]))
        with torch.no_grad():
            teacher = self._logits(self.teacher_backbone, self.teacher_head, views[:g], extras["global_points"])
        return self.distill(torch.cat(student).split(views[0].shape[0]), teacher)
