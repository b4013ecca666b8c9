"""Tiny components for tests of the machinery (runner, resume, plugins): NOT methods to train with.

``ToyContrastive`` is a two-view InfoNCE (SimCLR's NT-Xent restricted to cross-view pairs) on a
linear projection; its view transform is a seeded random crop plus flip in numpy.
``ToyMaskedContrastive`` is the same with a random patch mask per view carried as a view *extra*
(API 1.2, :class:`~facerep.types.Views`): masked patches are blanked before the encoder.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerep.types import DatasetInfo, LossOutput, Sample, Views

__all__ = ["NoiseFaces", "NoiseParams", "ToyContrastive", "ToyMaskedContrastive", "ToyMaskedParams", "ToyParams", "toy_views"]


@attrs.frozen
class NoiseParams:
    n: int = 32
    size: int = 32
    seed: int = 0


class NoiseFaces:
    """In-memory random RGB images with a two-class label: a stand-in dataset for machinery tests."""

    def __init__(self, params: NoiseParams | None = None) -> None:
        p = params or NoiseParams()
        self.images = np.random.default_rng(p.seed).integers(0, 256, size=(p.n, p.size, p.size, 3), dtype=np.uint8)
        self.info = DatasetInfo(name="noise", labels=("expression",), class_names={"expression": ("a", "b")}, synthetic=True)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=self.images[i], expression=int(i % 2), meta={"path": f"noise://{i}"})


@attrs.frozen
class ToyParams:
    out_dim: int = 16
    temperature: float = 0.5
    crop: int = 24
    #: Momentum of an EMA copy of the projector, to exercise after_optimizer_step state in resume tests.
    ema: float = 0.9


def toy_views(sample: Sample, rng: np.random.Generator, crop: int) -> list[np.ndarray]:
    img = sample.image
    h, w = img.shape[:2]
    views = []
    for _ in range(2):
        y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        v = img[y : y + crop, x : x + crop]
        views.append(np.ascontiguousarray(v[:, ::-1] if rng.random() < 0.5 else v))
    return views


class ToyContrastive(nn.Module):
    def __init__(self, params: ToyParams | None = None, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = params = params or ToyParams()
        self.backbone = backbone
        self.projector = nn.Linear(backbone.embed_dim, params.out_dim)
        self.ema_projector = nn.Linear(backbone.embed_dim, params.out_dim).requires_grad_(False)
        self.ema_projector.load_state_dict(self.projector.state_dict())
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def view_transform(self):
        return lambda sample, rng: toy_views(sample, rng, self.params.crop)

    def forward(self, views: list[torch.Tensor]) -> LossOutput:
        z = F.normalize(self.projector(self.backbone(torch.cat(views)).pooled), dim=1)  # (2B, d)
        z1, z2 = z.chunk(2)
        logits = z1 @ z2.T / self.params.temperature  # (B, B); positives on the diagonal
        target = torch.arange(len(z1), device=z.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return LossOutput(loss, {"z_std": float(z.detach().std(0).mean())})

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        from facerep.engine.ema import momentum_update

        momentum_update(self.ema_projector, self.projector, self.params.ema)
        self.steps_seen += 1

    def exported_backbone(self) -> nn.Module:
        return self.backbone


@attrs.frozen
class ToyMaskedParams(ToyParams):
    patch: int = 8
    mask_ratio: float = 0.5


@attrs.frozen
class _MaskedViews:
    crop: int
    patch: int
    mask_ratio: float

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Views:
        images = toy_views(sample, rng, self.crop)
        n = (self.crop // self.patch) ** 2
        masked = round(self.mask_ratio * n)
        mask = np.zeros((len(images), n), dtype=bool)
        for row in mask:
            row[rng.permutation(n)[:masked]] = True
        return Views(images=images, extras={"mask": mask})


class ToyMaskedContrastive(ToyContrastive):
    """``ToyContrastive`` on views whose masked patches (``extras["mask"]``, ``(B, 2, N)`` bool) are blanked."""

    params: ToyMaskedParams

    def __init__(self, params: ToyMaskedParams | None = None, *, backbone: nn.Module) -> None:
        super().__init__(params or ToyMaskedParams(), backbone=backbone)

    def view_transform(self):
        return _MaskedViews(self.params.crop, self.params.patch, self.params.mask_ratio)

    def forward(self, views: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None) -> LossOutput:
        if extras is None or "mask" not in extras:
            raise ValueError("ToyMaskedContrastive needs extras['mask'] from its view transform")
        g = self.params.crop // self.params.patch
        keep = (~extras["mask"]).float().view(-1, 2, 1, g, g)  # (B, 2, 1, g, g)
        keep = F.interpolate(keep.flatten(0, 1), scale_factor=self.params.patch).view(-1, 2, 1, *views[0].shape[-2:])
        return super().forward([v * keep[:, i].to(v.dtype) for i, v in enumerate(views)])
