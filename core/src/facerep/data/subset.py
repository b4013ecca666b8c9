"""A dataset restricted to given indices (few-shot subsets, validation splits), and a cheap way to
read one label field of a whole dataset (for stratified sampling and ``facerep data check``)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from facerep.protocols import FaceDataset
from facerep.types import DatasetInfo, Sample

__all__ = ["Subset", "label_array"]


class Subset:
    """``dataset`` seen through ``indices`` (kept, so results can record them)."""

    def __init__(self, dataset: FaceDataset, indices: np.ndarray, split: str | None = None) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(dataset)):
            raise IndexError(f"subset indices out of range for {dataset.info.name} ({len(dataset)} samples)")
        self.info: DatasetInfo = attrs.evolve(dataset.info, split=split or dataset.info.split)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[int(self.indices[index])]

    def label_array(self, field: str) -> np.ndarray | None:
        full = label_array(self.dataset, field)
        return None if full is None else full[self.indices]

    def __getattr__(self, name: str) -> Any:  # dataset extras (e.g. LFW's ``pairs``) stay reachable
        if name in ("dataset", "indices", "info"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def label_array(dataset: FaceDataset, field: str) -> np.ndarray | None:
    """One label field for every sample, stacked. Readers that parse an annotation file provide
    ``dataset.label_array(field)`` without decoding images; otherwise every sample is read."""
    fast = getattr(dataset, "label_array", None)
    if fast is not None:
        return fast(field)
    values = [dataset[i].label(field) for i in range(len(dataset))]
    if not values or any(v is None for v in values):
        return None
    return np.stack([np.asarray(v) for v in values])
