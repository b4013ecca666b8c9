"""The protocols every component implements. Shapes are stated in the docstrings.

Components are plain classes (``nn.Module`` where they hold weights) that take their frozen attrs
params object as first constructor argument; core never reads a global config.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from torch import nn

    from facerep.types import DatasetInfo, Features, LossOutput, Sample

__all__ = ["Backbone", "FaceDataset", "Head", "Objective", "Protocol", "Task", "ViewTransform"]


@runtime_checkable
class FaceDataset(typing.Protocol):
    """A sized, indexable source of :class:`~facerep.types.Sample`.

    ``__getitem__`` decodes lazily (one file per call) and raises
    :class:`~facerep.errors.DataError` naming the file when it cannot.
    """

    info: DatasetInfo

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class ViewTransform(typing.Protocol):
    """Turns one sample into the views an objective trains on.

    Returns a list of ``(h_v, w_v, 3)`` uint8 arrays; view ``v`` has the same size for every sample
    (so views batch by index). All randomness comes from ``rng`` (seeded per sample position by
    the runner), which makes runs reproducible and resumable and independent of the worker count.
    """

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[np.ndarray]: ...


class Backbone(typing.Protocol):
    """An encoder (``nn.Module``).

    ``preprocess(x)`` maps a ``(B, 3, H, W)`` uint8 batch to the normalised float input.
    ``forward(x) -> Features`` with ``pooled (B, embed_dim)``. ``layer_dims`` gives the channels of
    the configured intermediate layers.
    """

    embed_dim: int

    @property
    def layer_dims(self) -> list[int]: ...

    def preprocess(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor) -> Features: ...


class Objective(typing.Protocol):
    """A pretraining method (``nn.Module``), built as ``Objective(params, backbone=backbone)``.

    It owns everything besides the backbone: projectors, prototypes, momentum encoders, queues.
    The runner calls, per step::

        loss_out = objective(views)                 # views: list of (B, 3, h_v, w_v) float tensors
        loss_out.loss.backward()
        objective.before_optimizer_step(step)       # e.g. drop prototype gradients early on
        optimizer.step()
        objective.after_optimizer_step(step, max_steps)  # momentum/EMA updates, queues

    ``exported_backbone()`` names the weights that are "the pretrained backbone" (the student,
    or a teacher for self-distillation methods).
    """

    backbone: nn.Module

    def view_transform(self) -> ViewTransform: ...

    def forward(self, views: list[torch.Tensor]) -> LossOutput: ...

    def before_optimizer_step(self, step: int) -> None: ...

    def after_optimizer_step(self, step: int, max_steps: int) -> None: ...

    def exported_backbone(self) -> nn.Module: ...


class Head(typing.Protocol):
    """A downstream head (``nn.Module``), built as ``Head(params, in_dims=backbone.layer_dims or
    [embed_dim])``: ``forward(features) -> prediction`` and ``loss(prediction, targets) -> LossOutput``."""

    def forward(self, features: Features) -> torch.Tensor | dict[str, torch.Tensor]: ...

    def loss(self, prediction: torch.Tensor | dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> LossOutput: ...


class Task(typing.Protocol):
    """A downstream task: which label it reads, how to build its head and how to score predictions."""

    label: str

    def build_head(self, in_dims: list[int]) -> nn.Module: ...

    def metrics(self, predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]: ...


class Protocol(typing.Protocol):  # type: ignore[no-redef]
    """A transfer protocol: fit on ``train``, score on ``test``; returns ``{metric: value}``.

    Protocols put the backbone in ``eval()`` themselves and never select anything on ``test``.
    """

    name: str

    def run(self, backbone: Backbone, train: FaceDataset, test: FaceDataset, label: str) -> dict[str, float]: ...
