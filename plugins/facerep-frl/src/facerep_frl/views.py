"""View transforms: SwAV's multi-crop and MoCo-v2's two "aug-plus" views.

Both are callables ``(sample, rng) -> list of (h, w, 3) uint8 arrays`` (the
:class:`facerep.protocols.ViewTransform` protocol) built on :mod:`facerep.data.augment`; all
randomness comes from ``rng``, and view ``v`` has the same size for every sample.
"""

from __future__ import annotations

import attrs
import numpy as np

from facerep.data.augment import ColorAugment, random_resized_crop
from facerep.types import Sample

__all__ = ["CROP_RATIO", "MultiCropViews", "TwoViews"]

#: Aspect-ratio range of RandomResizedCrop (torchvision's default, used by SwAV and MoCo).
CROP_RATIO = (3 / 4, 4 / 3)


@attrs.frozen
class MultiCropViews:
    """SwAV multi-crop (Caron et al. 2020, Sec. 3.2), as used by Bulat et al. (2022, Sec. 1.4 of the brief).

    ``global_crops`` crops of ``global_size`` px with area fraction in ``global_scale``, then
    ``local_crops`` crops of ``local_size`` px with area in ``local_scale``; each crop gets its own
    colour distortion, grey, blur and flip (``color``). Globals come first: view indices
    ``0 .. global_crops-1`` are the global crops.
    """

    global_crops: int
    global_size: int
    global_scale: tuple[float, float]
    local_crops: int
    local_size: int
    local_scale: tuple[float, float]
    color: ColorAugment

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[np.ndarray]:
        crops = [(self.global_size, self.global_scale)] * self.global_crops + [(self.local_size, self.local_scale)] * self.local_crops
        return [self.color(random_resized_crop(sample.image, size, scale, CROP_RATIO, rng), rng) for size, scale in crops]


@attrs.frozen
class TwoViews:
    """MoCo-v2's "aug-plus" (Chen et al. 2020): two independent RandomResizedCrop(``size``,
    ``scale``) + colour jitter (p 0.8) + grey (p 0.2) + blur (p 0.5) + flip views of one image."""

    size: int
    scale: tuple[float, float]
    color: ColorAugment

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[np.ndarray]:
        return [self.color(random_resized_crop(sample.image, self.size, self.scale, CROP_RATIO, rng), rng) for _ in range(2)]
