"""FaRL's views: one image per sample (RandomResizedCrop + flip), its caption's token ids
(``extras["text"]``, ``(77,)`` int64) and a BEiT blockwise patch mask (``extras["mim_mask"]``,
``(N,)`` bool) for the masked copy.

Two block-mask generators (``mask_style``):

- ``beit`` (:func:`beit_block_mask`): BEiT's ``MaskingGenerator`` (microsoft/unilm 2312c6f,
  ``beit/masking_generator.py:27-98``), the generator FaRL's MIM follows: blocks of at least
  ``min_block`` patches, aspect ratio in [0.3, 1/0.3], strictly narrower and shorter than the grid,
  at most 10 tries per block, and it *stops* when no try adds a patch, so a mask can hold fewer
  than the target (BEiT 75 of 196: 74.5 on average, measured).
- ``exact`` (:func:`facerep.backbones.masking.block_mask`): exactly ``round(ratio * N)`` patches,
  the remainder topped up with single random patches (more fragmented: 2.06 connected pieces per
  14 x 14 mask at 40 % vs BEiT's 1.44; ``tests/reference/beit_masks.json``).
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import numpy as np

from facerep.backbones.masking import block_mask
from facerep.data.augment import hflip, resized_view
from facerep.errors import DataError
from facerep.types import Sample, Views
from facerep_farl.text import CaptionTokenizer

__all__ = ["CaptionedMaskedViews", "beit_block_mask"]


def _uniform(rng: np.random.Generator, a: float, b: float) -> float:
    """Python's ``random.uniform``: ``a + (b - a) u``, also for ``b < a`` (numpy's refuses that)."""
    return a + (b - a) * float(rng.random())


def beit_block_mask(rng: np.random.Generator, grid: tuple[int, int], n_masked: int, *, min_block: int = 16,
                    max_block: int | None = None, aspect: tuple[float, float] = (0.3, 1 / 0.3), tries: int = 10) -> np.ndarray:
    """``(h * w,)`` bool (True: masked), BEiT's blockwise masking with BEiT's stopping rule: up to
    ``n_masked`` patches (fewer when no block fits the remaining budget in ``tries`` draws).

    Per block (``masking_generator.py:57-80``): area ``s ~ U(min_block, budget)`` (``random.uniform``
    also for ``budget < min_block``), log-aspect ``~ U(log 0.3, log 1/0.3)``, sides
    ``round(sqrt(s r))`` x ``round(sqrt(s / r))``, kept only if strictly smaller than the grid on
    both axes; a uniformly placed block is accepted when it adds between 1 and ``budget`` new
    patches. The draws are made in BEiT's order (area, aspect, top, left), so a ``rng`` that maps
    ``random()`` / ``integers(lo, hi)`` onto Python's ``random.random`` / ``randint(lo, hi - 1)``
    reproduces BEiT's masks exactly (checked by ``scripts/faithfulness/farl_reference.py``).
    """
    h, w = grid
    cap = n_masked if max_block is None else max_block
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    mask = np.zeros((h, w), dtype=bool)
    count = 0
    while count < n_masked:
        budget = min(n_masked - count, cap)
        added = 0
        for _ in range(tries):
            area = _uniform(rng, min_block, budget)
            r = math.exp(_uniform(rng, *log_aspect))
            bh, bw = round(math.sqrt(area * r)), round(math.sqrt(area / r))
            if bw < w and bh < h:  # strict, as BEiT: no block spans the whole grid
                top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
                block = mask[top : top + bh, left : left + bw]
                new = bh * bw - int(block.sum())
                if 0 < new <= budget:
                    block[...] = True
                    added = new
                    break
        if not added:  # BEiT: nothing fits -> the mask keeps fewer patches than asked
            break
        count += added
    return mask.ravel()


@attrs.frozen
class CaptionedMaskedViews:
    size: int
    grid: tuple[int, int]
    mask_ratio: float
    min_block: int
    tokenizer: CaptionTokenizer = attrs.field(eq=False)
    crop_scale: tuple[float, float] = (1.0, 1.0)
    flip_p: float = 0.5
    mask_style: Literal["beit", "exact"] = "beit"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Views:
        if not sample.caption:
            raise DataError(f"{sample.meta.get('path', '?')}: FaRL trains on image-text pairs and this sample has no caption "
                            f"(use a captioned dataset: farl.captioned, farl.caption_table, farl.webdataset)")
        img = resized_view(sample.image, self.size, self.crop_scale, rng)
        if rng.random() < self.flip_p:
            img = hflip(img)
        if self.mask_style == "beit":
            n = self.grid[0] * self.grid[1]
            mask = beit_block_mask(rng, self.grid, round(self.mask_ratio * n), min_block=self.min_block)
        else:
            mask = block_mask(rng, self.grid, self.mask_ratio, min_block=self.min_block)
        return Views(images=[img], extras={"text": self.tokenizer(sample.caption), "mim_mask": mask})
