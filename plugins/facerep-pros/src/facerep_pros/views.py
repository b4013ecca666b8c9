"""ProS's views: DINO's multi-crop with asymmetric photometric augmentation (Caron et al. 2021,
Sec. 3.1 and Appendix; ProS's abstract: "cropping, blurring, coloring, etc."; ``specs/methods.md`` §4.3).

Two global crops of ``global_size`` px (area in ``global_scale``) and ``local_crops`` local crops of
``local_size`` px (area in ``local_scale``), globals first. Colour jitter (0.4, 0.4, 0.2, 0.1) with
p 0.8, grey p 0.2 and flip p 0.5 on every crop; Gaussian blur with p 1.0 on the first global, 0.1
on the second (which is also solarised with p 0.2) and 0.5 on the locals (BYOL's asymmetry, as DINO).
"""

from __future__ import annotations

import attrs
import numpy as np

from facerep.data.augment import ColorAugment, random_resized_crop
from facerep.types import Sample

__all__ = ["AsymmetricMultiCrop"]

@attrs.frozen
class AsymmetricMultiCrop:
    """``(sample, rng) -> [global 1, global 2, local 1, ..., local n]`` uint8 ``(h, w, 3)`` views
    (RandomResizedCrop with torchvision's aspect ratios 3/4-4/3, as DINO)."""

    global_size: int
    global_scale: tuple[float, float]
    local_crops: int
    local_size: int
    local_scale: tuple[float, float]
    colours: tuple[ColorAugment, ColorAugment, ColorAugment]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[np.ndarray]:
        first, second, local = self.colours
        crops = [(self.global_size, self.global_scale, first), (self.global_size, self.global_scale, second)]
        crops += [(self.local_size, self.local_scale, local)] * self.local_crops
        return [colour(random_resized_crop(sample.image, size, scale, rng=rng), rng) for size, scale, colour in crops]
