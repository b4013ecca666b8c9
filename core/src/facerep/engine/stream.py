"""A seeded, position-addressed sample stream for pretraining.

Every training sample is addressed by its global position ``k`` in an endless stream: epoch
``e = k // n`` visits the dataset in the permutation drawn from ``(seed, e)``, and the sample's
augmentation RNG is seeded with ``(seed, k)``. Consequences:

- a run is reproducible whatever the number of data-loader workers;
- resuming at step ``s`` starts the stream at ``s * global_batch`` without replaying (decoding)
  the batches already seen, and yields exactly what an uninterrupted run would have;
- the global batch of step ``s`` is the same for any world size: rank ``r`` of ``W`` takes the
  ``r``-th contiguous slice, so a 2-process run sees what one process with the same global batch
  sees. With ``k`` micro-batches per step (``train.accumulate_steps``) this holds per micro-batch:
  micro-batch ``j`` of step ``s`` is the global slice ``[s G + j W B, s G + (j + 1) W B)`` (``G = k W
  B``), rank ``r`` taking its ``r``-th ``B`` positions; a rank's loader batch stacks its ``k`` slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from facerep.protocols import FaceDataset, ViewTransform
from facerep.types import as_views

__all__ = ["StreamSampler", "ViewStream"]


class ViewStream(Dataset):
    """Maps a stream position ``k`` to the views of one sample: ``{"views": [uint8 (3, h, w)]}``,
    plus ``"extras": {name: array}`` when the transform returns :class:`~facerep.types.Views` with
    extras (the default collate stacks both)."""

    def __init__(self, dataset: FaceDataset, transform: ViewTransform, seed: int) -> None:
        if len(dataset) == 0:
            raise ValueError(f"training dataset {getattr(dataset, 'info', dataset)} is empty")
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def index_of(self, k: int) -> int:
        n = len(self.dataset)
        epoch = k // n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        assert self._perm is not None
        return int(self._perm[k % n])

    def __getitem__(self, k: int) -> dict[str, Any]:
        sample = self.dataset[self.index_of(k)]
        rng = np.random.default_rng([self.seed, 1, k])
        out = as_views(self.transform(sample, rng))
        # HWC uint8 -> CHW uint8; normalisation happens on the device (Backbone.preprocess).
        item: dict[str, Any] = {"views": [torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for v in out.images]}
        if out.extras:
            item["extras"] = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in out.extras.items()}
        return item


class StreamSampler(Sampler[int]):
    """Yields this rank's stream positions, forever, from step ``start_step`` on: per step, its
    share of each of the ``accumulate_steps`` micro-batches, in micro-batch order."""

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1, total_steps: int = 2**40, accumulate_steps: int = 1) -> None:
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.rank = rank
        self.world_size = world_size
        self.accumulate_steps = accumulate_steps
        self.start_step = 0

    def __iter__(self) -> Iterator[int]:
        micro = self.batch_size * self.world_size
        step = self.start_step
        while True:
            for j in range(self.accumulate_steps):
                first = (step * self.accumulate_steps + j) * micro + self.rank * self.batch_size
                yield from range(first, first + self.batch_size)
            step += 1

    def __len__(self) -> int:  # endless, but a run takes total_steps batches (progress display)
        return self.total_steps * self.batch_size * self.accumulate_steps
