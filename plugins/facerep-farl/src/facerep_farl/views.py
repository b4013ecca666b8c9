"""FaRL's views: one image per sample (RandomResizedCrop + flip), its caption's token ids
(``extras["text"]``, ``(77,)`` int64) and a BEiT blockwise patch mask (``extras["mim_mask"]``,
``(N,)`` bool) for the masked copy."""

from __future__ import annotations

import attrs
import numpy as np

from facerep.backbones.masking import block_mask
from facerep.data.augment import hflip, resized_view
from facerep.errors import DataError
from facerep.types import Sample, Views
from facerep_farl.text import CaptionTokenizer

__all__ = ["CaptionedMaskedViews"]


@attrs.frozen
class CaptionedMaskedViews:
    size: int
    grid: tuple[int, int]
    mask_ratio: float
    min_block: int
    tokenizer: CaptionTokenizer = attrs.field(eq=False)
    crop_scale: tuple[float, float] = (1.0, 1.0)
    flip_p: float = 0.5

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Views:
        if not sample.caption:
            raise DataError(f"{sample.meta.get('path', '?')}: FaRL trains on image-text pairs and this sample has no caption "
                            f"(use a captioned dataset: farl.captioned, farl.caption_table, farl.webdataset)")
        img = resized_view(sample.image, self.size, self.crop_scale, rng)
        if rng.random() < self.flip_p:
            img = hflip(img)
        mask = block_mask(rng, self.grid, self.mask_ratio, min_block=self.min_block)
        return Views(images=[img], extras={"text": self.tokenizer(sample.caption), "mim_mask": mask})
