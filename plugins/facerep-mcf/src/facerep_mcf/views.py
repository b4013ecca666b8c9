"""MCF's views: one image per sample (resize + horizontal flip, as the official code; an optional
RandomResizedCrop for short CPU runs) and two independent MAE random masks carried as the view
extra ``"mask"`` ``(2, N)`` bool: row 0 for the online encoder, row 1 for the momentum encoder."""

from __future__ import annotations

import attrs
import numpy as np

from facerep.backbones.masking import random_mask
from facerep.data.augment import crop_resize, hflip, random_resized_crop
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
        img = sample.image
        if self.crop_scale == (1.0, 1.0):
            img = crop_resize(img, (0, 0, img.shape[0], img.shape[1]), self.size)
        else:
            img = random_resized_crop(img, self.size, self.crop_scale, (3 / 4, 4 / 3), rng)
        if rng.random() < self.flip_p:
            img = hflip(img)
        masks = np.stack([random_mask(rng, self.n_patches, self.mask_ratio) for _ in range(2)])
        return Views(images=[img], extras={"mask": masks})
