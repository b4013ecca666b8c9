"""MCF's views: one image per sample (resize + horizontal flip, as the official code; an optional
RandomResizedCrop for short CPU runs) and two independent MAE random masks carried as the view
extra ``"mask"`` ``(2, N)`` bool: row 0 for the online encoder, row 1 for the momentum encoder."""

from __future__ import annotations

import attrs
import numpy as np

from facerep.backbones.masking import random_mask
from facerep.data.augment import hflip, resized_view
from facerep.types import Sample, Views

__all__ = ["MaskedPairViews"]


@attrs.frozen
class MaskedPairViews:
    size: int
    n_patches: int
    mask_ratio: float
    crop_scale: tuple[float, float] = (1.0, 1.0)
    flip_p: float = 0.5

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Views:
        img = resized_view(sample.image, self.size, self.crop_scale, rng)
        if rng.random() < self.flip_p:
            img = hflip(img)
        masks = np.stack([random_mask(rng, self.n_patches, self.mask_ratio) for _ in range(2)])
        return Views(images=[img], extras={"mask": masks})
