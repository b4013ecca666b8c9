"""Plain data types shared by every component: one face (`Sample`), what a backbone returns
(`Features`), what an objective or head returns (`LossOutput`) and what a dataset knows about its
labels (`DatasetInfo`).

These are deliberately torch-free at import time except for type annotations, so that datasets and
the CLI can use them without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DatasetInfo", "Features", "LossOutput", "ParamGroup", "Prepared", "Sample", "Views", "as_views"]


def _check_image(instance: Sample, attribute: attrs.Attribute, value: np.ndarray) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
        got = f"{type(value).__name__} {getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}"
        raise ValueError(f"Sample.image must be an HxWx3 uint8 RGB array, got {got} ({instance.meta.get('path', '?')})")


@attrs.define(eq=False)
class Sample:
    """One face: an RGB uint8 image and whatever labels the source provides.

    Every label is optional; ``None`` means "not annotated", which is the normal case for
    unlabelled pretraining data.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        identity: integer identity label (recognition).
        landmarks: ``(K, 2)`` float32 pixel coordinates ``(x, y)`` in this image, 0-based.
        mask: ``(H, W)`` uint8 class-index parsing mask aligned with ``image``.
        attributes: ``(A,)`` binary attribute vector (0/1 as uint8).
        expression: integer expression class.
        aus: ``(U,)`` action-unit occurrence (0/1) or intensity (float) vector.
        caption: free text (image-text methods).
        meta: anything else; ``meta["path"]`` is the source file when there is one.
    """

    image: np.ndarray = attrs.field(validator=_check_image)
    identity: int | None = None
    landmarks: np.ndarray | None = None
    mask: np.ndarray | None = None
    attributes: np.ndarray | None = None
    expression: int | None = None
    aus: np.ndarray | None = None
    caption: str | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)

    #: Names of the label fields, in a stable order (used by probes: ``label="expression"``).
    LABEL_FIELDS = ("identity", "landmarks", "mask", "attributes", "expression", "aus", "caption")

    def label(self, name: str) -> Any:
        if name not in self.LABEL_FIELDS:
            raise KeyError(f"unknown label field {name!r}; choose one of {', '.join(self.LABEL_FIELDS)}")
        return getattr(self, name)


@attrs.frozen
class DatasetInfo:
    """What a dataset knows about itself and its labels.

    Attributes:
        name: short dataset name, e.g. ``"fer2013"``.
        split: ``"train"``, ``"test"``, ... or ``"all"``.
        labels: label fields that every sample carries (subset of ``Sample.LABEL_FIELDS``).
        class_names: names of the classes, per label field (``{"expression": ("angry", ...)}``).
        landmark_scheme: e.g. ``"68"``, ``"5"`` (None when there are no landmarks).
        flip_pairs: landmark index pairs swapped by a horizontal flip.
        synthetic: True for generated data (never report numbers on it as real results).
    """

    name: str
    split: str = "all"
    labels: tuple[str, ...] = ()
    class_names: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    landmark_scheme: str | None = None
    flip_pairs: tuple[tuple[int, int], ...] = ()
    synthetic: bool = False


@attrs.define(eq=False)
class Features:
    """What a backbone returns for a batch.

    Attributes:
        pooled: ``(B, D)`` global vector (CLS token for ViTs, global average pool for CNNs).
        tokens: ``(B, N, D)`` patch tokens of the last layer (ViT) or the flattened last feature
            map (CNN); None when the backbone has neither.
        layers: chosen intermediate layers as ``(B, C, h, w)`` maps, in the order configured
            (ViT patch tokens are reshaped to their grid), for feature pyramids.
        layer_cls: per chosen layer, the ``(B, D)`` CLS token (ViTs only; empty otherwise).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    layers: list[torch.Tensor] = attrs.field(factory=list)
    layer_cls: list[torch.Tensor] = attrs.field(factory=list)


@attrs.define(eq=False)
class ParamGroup:
    """Optimizer settings an objective declares for some of its parameters
    (``Objective.param_groups()``, optional); parameters it does not list follow the ``train``
    block (``optimizer.no_decay`` decides their weight decay).

    Attributes:
        params: the parameters of this group (each in at most one group).
        weight_decay: None: the configured ``optimizer.weight_decay``; 0 exempts the group.
        adapt: False exempts the group from LARS's trust-ratio scaling (with LARS that requires
            ``weight_decay=0``: SwAV, BYOL and Barlow Twins exempt biases and norms from both).
        lr_scale: the group's lr is this times the scheduled lr (e.g. a slower predictor).
        name: shown in error messages.
    """

    params: list[torch.nn.Parameter]
    weight_decay: float | None = None
    adapt: bool = True
    lr_scale: float = 1.0
    name: str = ""


@attrs.define(eq=False)
class LossOutput:
    """A scalar loss to minimise plus float logs (detached, for the logger)."""

    loss: torch.Tensor
    logs: dict[str, float] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Prepared:
    """One sample made ready for a task's network: what :meth:`Task.prepare` returns.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB network input (the task's ``input_size``).
        target: training targets in *input* coordinates, as numpy arrays (batched by key; every
            sample of a task has the same keys and shapes).
        meta: whatever :meth:`Task.predict` needs to map a prediction back to the original image,
            e.g. ``{"matrix": (2, 3) original->input affine, "size": (h, w)}``. Not batched.
    """

    image: np.ndarray
    target: dict[str, np.ndarray] = attrs.field(factory=dict)
    meta: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Views:
    """What a view transform returns when its objective needs more than pixels (API 1.2).

    Attributes:
        images: the views, ``(h_v, w_v, 3)`` uint8 each; view ``v`` has the same size for every sample.
        extras: named per-sample arrays that batch beside the images (stacked along a new first
            axis), e.g. a caption's token ids ``"text": (77,) int64``, a patch mask per view
            ``"mask": (V, N) bool``, landmarks per view ``"points": (V, K, 2) float32``. Every sample
            must give the same keys, shapes and dtypes; dtypes are kept (use bool, int64, float32).

    A transform that returns a plain list of arrays means ``Views(images=that_list)``.
    """

    images: list[np.ndarray]
    extras: dict[str, np.ndarray] = attrs.field(factory=dict)


def _unname_generated_globals(*classes: type) -> None:
    """Let ``torch.compile`` trace the attrs-generated ``__init__`` of a class built inside a compiled
    forward (a backbone's :class:`Features`).

    attrs compiles each class's ``__init__`` in a copy of this module's globals plus its own names
    (``NOTHING``, the ``__attr_factory_<field>`` defaults), ``__name__`` included. Dynamo up to torch
    2.13 takes a traced function's ``__globals__["__name__"]`` for the module its globals live in and
    guards each global it reads as ``facerep.types.<name>``, which does not exist: the first compiled
    forward fails building its guards (torch 2.11: ``InternalTorchDynamoError: AttributeError: module
    'facerep.types' has no attribute 'NOTHING'``). Without ``__name__`` it guards the copy itself,
    what torch 2.14 does for any globals that are not their module's ``__dict__``
    (``_registered_module_for_globals``). The copy is the generated methods' own; the module keeps
    its name, and the methods keep ``__module__``.
    """
    for cls in classes:
        cls.__init__.__globals__.pop("__name__", None)


_unname_generated_globals(Sample, DatasetInfo, Features, ParamGroup, LossOutput, Prepared, Views)


def as_views(out: Views | list[np.ndarray]) -> Views:
    """A view transform's output as :class:`Views` (a plain list has no extras)."""
    return out if isinstance(out, Views) else Views(images=list(out))
