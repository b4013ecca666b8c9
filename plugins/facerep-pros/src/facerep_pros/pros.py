"""ProS (Di, Zheng, Liu, Cheng, "Facial Omni-Representation Learning via Prototype-based
Self-Distillation", WACV 2024, arXiv 2311.01929): a student and an EMA teacher ViT see differently
augmented crops of face-dominant images; a prototype-matching loss aligns the student's similarity
distribution over a set of learnable prototypes with the teacher's; the teacher is the pretrained
backbone.

ProS has no released code. What the abstract fixes is built as stated (two ViTs, crop/blur/colour
views, explicit learnable prototypes, similarity distributions matched teacher -> student, teacher
exported); the rest follows DINO, of which the loss is an instance (``specs/methods.md`` §4.2-4.3,
[I]). Per step, with views ``x_1, x_2`` (global) and ``x_3 .. x_V`` (local)::

    g_s(x_v) = cos(z_s(x_v), c_k)_k        student: every view       (facerep.prototypes.PrototypeHead)
    P_t(x_i) = softmax((g_t(x_i) - c) / tau_t)   teacher: globals, centred, sharpened
    L = mean_{i in {1,2}, v != i} H(P_t(x_i), softmax(g_s(x_v) / tau_s))
    then: theta_t <- m theta_t + (1 - m) theta_s (m: cosine 0.996 -> 1), c <- 0.9 c + 0.1 mean g_t

The teacher's prototypes are the EMA of the student's (one set, as DINO's shared last layer).
``tau_t`` warms up linearly (0.04 -> 0.07 over DINO's 30 epochs, here in steps); the prototypes are
frozen for the first ``freeze_prototypes_steps`` (DINO: 1 epoch).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch import nn

from facerep.backbones import pooled_by_size
from facerep.config import in_range, non_negative, positive
from facerep.data.augment import dino_colour_augments
from facerep.errors import ConfigError
from facerep.prototypes import PrototypeDistillation
from facerep.types import LossOutput
from facerep_pros.views import AsymmetricMultiCrop

__all__ = ["ProSObjective", "ProSParams"]


@attrs.frozen
class ProSParams:
    """Defaults: the DINO ViT-B/16 values of ``specs/methods.md`` §4.3 (ProS's own are unpublished),
    but for the crop scales, split at 0.32 there; DINO's code splits at 0.4, which the paper preset uses.

    Attributes:
        n_prototypes: K learnable prototypes (DINO 65,536; ablate 4k-65k).
        hidden_dim, bottleneck_dim, head_layers: the projector MLP (768-2048-2048-256).
        learn_norm: per-prototype learnable gain (DINO's ``norm_last_layer: false``).
        prototype_init: ``trunc_normal`` or ``linear`` (DINO's ``nn.Linear`` default, row norm ~0.577):
            :class:`~facerep.prototypes.PrototypeHead`.
        student_temperature: tau_s.
        teacher_temperature, warmup_teacher_temperature, teacher_temperature_warmup_steps: tau_t
            goes linearly from the warm-up value to the final one.
        centre_momentum: m_c of the teacher-output centre.
        momentum: the teacher's EMA momentum at step 0; a cosine takes it to 1 at the last step.
        freeze_prototypes_steps: the prototypes get no update for this many first steps.
        global_size, global_scale, local_crops, local_size, local_scale: multi-crop (2 globals).
        jitter, jitter_p, grayscale_p, solarize_p, flip_p, blur_p, blur_sigma: photometric
            augmentation; ``blur_p`` = (first global, second global, locals); ``blur_sigma``: the
            Gaussian blur's sigma range in pixels (DINO's 0.1-2 is for 224 px crops).
    """

    n_prototypes: int = attrs.field(default=65536, validator=positive)
    hidden_dim: int = attrs.field(default=2048, validator=positive)
    bottleneck_dim: int = attrs.field(default=256, validator=positive)
    head_layers: int = attrs.field(default=3, validator=positive)
    learn_norm: bool = False
    prototype_init: Literal["trunc_normal", "linear"] = "trunc_normal"
    student_temperature: float = attrs.field(default=0.1, validator=positive)
    teacher_temperature: float = attrs.field(default=0.07, validator=positive)
    warmup_teacher_temperature: float = attrs.field(default=0.04, validator=positive)
    teacher_temperature_warmup_steps: int = attrs.field(default=0, validator=non_negative)
    centre_momentum: float = attrs.field(default=0.9, validator=in_range(0, 1, hi_inclusive=False))
    momentum: float = attrs.field(default=0.996, validator=in_range(0, 1, hi_inclusive=True))
    freeze_prototypes_steps: int = attrs.field(default=0, validator=non_negative)
    global_size: int = attrs.field(default=224, validator=positive)
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_crops: int = attrs.field(default=8, validator=non_negative)
    local_size: int = attrs.field(default=96, validator=positive)
    local_scale: tuple[float, float] = (0.05, 0.32)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = attrs.field(default=0.8, validator=in_range(0, 1, hi_inclusive=True))
    grayscale_p: float = attrs.field(default=0.2, validator=in_range(0, 1, hi_inclusive=True))
    solarize_p: float = attrs.field(default=0.2, validator=in_range(0, 1, hi_inclusive=True))
    flip_p: float = attrs.field(default=0.5, validator=in_range(0, 1, hi_inclusive=True))
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @classmethod
    def tiny(cls) -> ProSParams:
        return cls(n_prototypes=32, hidden_dim=32, bottleneck_dim=16, global_size=32, local_crops=2, local_size=16,
                   teacher_temperature_warmup_steps=4, freeze_prototypes_steps=1)

    @classmethod
    def tiny_backbone(cls) -> dict[str, Any]:
        """The ``core.timm`` params the contract suites build ProS on (a ViT taking both crop sizes)."""
        return {"model": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "model_kwargs": {"depth": 2, "dynamic_img_size": True}}


class ProSObjective(PrototypeDistillation):
    """Student, EMA teacher, head, centre and schedules: :class:`facerep.prototypes.PrototypeDistillation`."""

    def __init__(self, params: ProSParams, *, backbone: nn.Module) -> None:
        model = getattr(backbone, "model", None)
        if params.local_crops and params.local_size != params.global_size and getattr(model, "dynamic_img_size", True) is False:
            raise ConfigError(f"objective.params.local_size: {params.local_size} px local crops need a ViT that takes any input size; "
                              f"add backbone.params.model_kwargs.dynamic_img_size: true (timm)")
        super().__init__(params, backbone)

    def view_transform(self) -> AsymmetricMultiCrop:
        p = self.params
        colours = dino_colour_augments(jitter=tuple(p.jitter), jitter_p=p.jitter_p, grayscale_p=p.grayscale_p, flip_p=p.flip_p,
                                       solarize_p=p.solarize_p, blur_p=tuple(p.blur_p), blur_sigma=tuple(p.blur_sigma))
        return AsymmetricMultiCrop(global_size=p.global_size, global_scale=tuple(p.global_scale), local_crops=p.local_crops,
                                   local_size=p.local_size, local_scale=tuple(p.local_scale), colours=colours)

    @staticmethod
    def _logits(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
        """``(V * B, K)`` in view order: one backbone call per run of same-size views, one head call."""
        return head(pooled_by_size(backbone, views))

    def forward(self, views: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None) -> LossOutput:
        if len(views) != 2 + self.params.local_crops:
            raise ValueError(f"ProS expects 2 global + {self.params.local_crops} local views, got {len(views)}")
        student = self._logits(self.backbone, self.head, views).split(views[0].shape[0])
        with torch.no_grad():
            teacher = self._logits(self.teacher_backbone, self.teacher_head, views[:2])
        return self.distill(student, teacher)
