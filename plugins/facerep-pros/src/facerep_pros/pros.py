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

import copy
import itertools
from typing import Any

import attrs
import torch
from torch import nn

from facerep.config import in_range, non_negative, positive
from facerep.engine.ema import cosine_momentum, momentum_update
from facerep.errors import ConfigError
from facerep.prototypes import Centre, PrototypeHead, linear_warmup, prototype_distillation_loss, teacher_distribution
from facerep.types import LossOutput, ParamGroup
from facerep_pros.views import AsymmetricMultiCrop, dino_colour_augments

__all__ = ["ProSObjective", "ProSParams"]


@attrs.frozen
class ProSParams:
    """Defaults: the DINO ViT-B/16 values of ``specs/methods.md`` §4.3 (ProS's own are unpublished).

    Attributes:
        n_prototypes: K learnable prototypes (DINO 65,536; ablate 4k-65k).
        hidden_dim, bottleneck_dim, head_layers: the projector MLP (768-2048-2048-256).
        learn_norm: per-prototype learnable gain (DINO's ``norm_last_layer: false``).
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


class ProSObjective(nn.Module):
    def __init__(self, params: ProSParams, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = params
        model = getattr(backbone, "model", None)
        if params.local_crops and params.local_size != params.global_size and getattr(model, "dynamic_img_size", True) is False:
            raise ConfigError(f"objective.params.local_size: {params.local_size} px local crops need a ViT that takes any input size; "
                              f"add backbone.params.model_kwargs.dynamic_img_size: true (timm)")
        self.backbone = backbone
        self.head = PrototypeHead(backbone.embed_dim, params.n_prototypes, hidden_dim=params.hidden_dim,
                                  bottleneck_dim=params.bottleneck_dim, layers=params.head_layers, learn_norm=params.learn_norm)
        self.teacher_backbone = copy.deepcopy(backbone).requires_grad_(False).eval()
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.centre = Centre(params.n_prototypes, params.centre_momentum)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # steps done: tau_t after a resume

    def train(self, mode: bool = True) -> ProSObjective:
        super().train(mode)
        self.teacher_backbone.eval()  # targets without dropout / drop-path (LAFS's code leaves them on: §5.11)
        return self

    def view_transform(self) -> AsymmetricMultiCrop:
        p = self.params
        colours = dino_colour_augments(jitter=tuple(p.jitter), jitter_p=p.jitter_p, grayscale_p=p.grayscale_p, flip_p=p.flip_p,
                                       solarize_p=p.solarize_p, blur_p=tuple(p.blur_p), blur_sigma=tuple(p.blur_sigma))
        return AsymmetricMultiCrop(global_size=p.global_size, global_scale=tuple(p.global_scale), local_crops=p.local_crops,
                                   local_size=p.local_size, local_scale=tuple(p.local_scale), colours=colours)

    def param_groups(self) -> list[ParamGroup]:
        """DINO: no weight decay on biases, norms and the prototype gains (1-D tensors)."""
        flat = [p for n, p in self.named_parameters() if not n.startswith("backbone.") and p.ndim < 2 and p.requires_grad]
        return [ParamGroup(params=flat, weight_decay=0.0, name="pros 0/1-D")]

    @staticmethod
    def _logits(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
        """``(V * B, K)`` in view order: one backbone call per run of same-size views, one head call."""
        pooled = [backbone(torch.cat(list(group))).pooled for _, group in itertools.groupby(views, key=lambda v: v.shape[-2:])]
        return head(torch.cat(pooled))

    def teacher_temperature(self) -> float:
        p = self.params
        return linear_warmup(int(self.step), p.teacher_temperature_warmup_steps, p.warmup_teacher_temperature, p.teacher_temperature)

    def forward(self, views: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None) -> LossOutput:
        p = self.params
        if len(views) != 2 + p.local_crops:
            raise ValueError(f"ProS expects 2 global + {p.local_crops} local views, got {len(views)}")
        b = views[0].shape[0]
        student = self._logits(self.backbone, self.head, views).split(b)
        with torch.no_grad():
            teacher = self._logits(self.teacher_backbone, self.teacher_head, views[:2])
            tau_t = self.teacher_temperature()
            probs = teacher_distribution(teacher, self.centre.centre, tau_t)
        loss = prototype_distillation_loss(student, probs.split(b), p.student_temperature)
        if self.training:
            self.centre.stage(teacher)
        with torch.no_grad():  # collapse signals: a sharp P_t per image, spread over prototypes on average
            mean_p = probs.mean(0)
            logs = {"teacher_entropy": float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()),
                    "mean_entropy": float(-(mean_p * mean_p.clamp_min(1e-12).log()).sum()),
                    "teacher_temperature": tau_t}
        return LossOutput(loss, logs)

    def before_optimizer_step(self, step: int) -> None:
        if step < self.params.freeze_prototypes_steps:
            self.head.cancel_prototype_gradients()

    @torch.no_grad()
    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        m = cosine_momentum(step, max_steps, self.params.momentum)
        momentum_update(self.teacher_backbone, self.backbone, m, copy_buffers=True)  # BN statistics of a CNN student
        momentum_update(self.teacher_head, self.head, m)
        self.centre.commit()
        self.step.fill_(step + 1)

    def exported_backbone(self) -> nn.Module:
        return self.teacher_backbone
