"""Frozen-backbone feature extraction for probes: decode in loader workers, batch uint8, normalise
on the device, one forward per batch, no gradients."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facerep.errors import ConfigError
from facerep.protocols import FaceDataset

__all__ = ["extract_features", "extract_splits"]


class _Resized(Dataset):
    def __init__(self, dataset: FaceDataset, size: int | None, label: str) -> None:
        self.dataset, self.size, self.label = dataset, size, label

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        sample = self.dataset[i]
        img = sample.image
        if self.size is not None and img.shape[:2] != (self.size, self.size):
            interp = cv2.INTER_AREA if min(img.shape[:2]) > self.size else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.size, self.size), interpolation=interp)
        value = sample.label(self.label)
        if value is None:
            raise ConfigError(f"{sample.meta.get('path', i)}: label {self.label!r} is not annotated in dataset {self.dataset.info.name}")
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), torch.as_tensor(np.asarray(value))


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    dataset: FaceDataset,
    label: str,
    *,
    image_size: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Returns pooled features ``(N, D)`` float32 and labels ``(N,)`` or ``(N, A)``."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    loader = DataLoader(_Resized(dataset, image_size, label), batch_size=batch_size, num_workers=num_workers, shuffle=False)
    feats, labels = [], []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for images, target in loader:
        with autocast:
            out = backbone(backbone.preprocess(images.to(device)))
        feats.append(out.pooled.float().cpu())
        labels.append(target)
    backbone.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def extract_splits(backbone: torch.nn.Module, train: FaceDataset, test: FaceDataset, label: str, params: Any) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)`` with the extraction settings of a probe's params
    (``image_size``, ``batch_size``, ``num_workers``, ``precision``)."""
    kw = dict(image_size=params.image_size, batch_size=params.batch_size, num_workers=params.num_workers, precision=params.precision)
    return (*extract_features(backbone, train, label, **kw), *extract_features(backbone, test, label, **kw))
