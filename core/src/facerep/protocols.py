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

    from facerep.types import DatasetInfo, Features, LossOutput, Prepared, Sample, Views

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

    API 1.2: it may instead return :class:`~facerep.types.Views`: the images plus named per-sample
    arrays (``extras``: a caption's token ids, a mask per view, landmarks per view) that the runner
    batches beside the images and passes to ``Objective.forward(views, extras=...)``.
    """

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[np.ndarray] | Views: ...


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

        for j in range(k):                              # k = train.accumulate_steps micro-batches (usually 1)
            loss_out = objective(views_j)               # views: list of (B, 3, h_v, w_v) float tensors
            loss_out = objective(views_j, extras=extras_j)  # instead, when the view transform returns
                                                        # Views with extras: {name: (B, ...) tensor}, dtype kept
            (loss_out.loss / k).backward()
            objective.after_micro_batch(step, j, k)     # optional (API 1.4): per-forward state
        objective.before_optimizer_step(step)           # e.g. drop prototype gradients early on
        optimizer.step()
        objective.after_optimizer_step(step, max_steps)  # momentum/EMA updates, queues

    Optional (API 1.4): ``after_micro_batch(step, micro, n_micro)``, called after each forward +
    backward of a step (``micro`` = 0 .. ``n_micro - 1``; ``n_micro`` = ``train.accumulate_steps``),
    before ``before_optimizer_step``. For state that the method's own code updates in every
    forward: enqueue this micro-batch's keys (MoCo, SwAV), commit a teacher centre (DINO), or move
    a momentum encoder once more towards the (unchanged) online weights between micro-batches (MoCo
    and MCF update theirs at the start of every forward, so ``k`` times per optimizer step). An
    objective without it keeps working; with ``k > 1`` the runner warns that its per-step updates
    see the step, not each micro-batch. No hook runs in the middle of a step at a checkpoint:
    checkpoints fall between optimizer steps.

    ``exported_backbone()`` names the weights that are "the pretrained backbone" (the student,
    or a teacher for self-distillation methods).

    Optional: ``param_groups() -> list[ParamGroup]`` declares optimizer settings for some
    parameters (no weight decay, no LARS adaptation, an lr scale); the rest follow the ``train``
    block. Parameters that do not require gradients (momentum encoders) are never optimised.

    Optional (API 1.2): ``manifest() -> dict`` of JSON-serialisable facts about the run that are not
    in its params (e.g. the file and SHA-256 of a frozen teacher); written to the work dir's
    ``objective.json`` and into the exported backbone's sidecar. ``exports() -> dict[str, nn.Module]``:
    modules besides the backbone saved at the end as ``<name>.safetensors`` in the work dir, with a
    sidecar holding the objective's config (e.g. FaRL's text tower, which zero-shot protocols read;
    ``facerep.checkpoint.read_module``).
    """

    backbone: nn.Module

    def view_transform(self) -> ViewTransform: ...

    def forward(self, views: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None) -> LossOutput: ...

    def before_optimizer_step(self, step: int) -> None: ...

    def after_optimizer_step(self, step: int, max_steps: int) -> None: ...

    def exported_backbone(self) -> nn.Module: ...


class Head(typing.Protocol):
    """A downstream head (``nn.Module``), built by its :class:`Task`.

    Two steps, so that a frozen backbone is run once per image and its output cached:

    * ``select(features) -> dict[str, Tensor]``: *parameter-free* choice/reduction of what the head
      reads (e.g. the four pyramid layers, or mean/max/CLS of each layer). Every value is batched
      along dim 0. Frozen protocols call it once per image and cache the result.
      Frozen protocols key that cache by the head's class; a head whose ``select`` depends on its
      constructor arguments (e.g. which layers it pools) exposes them as ``select_key``.
    * ``forward(inputs) -> output`` on that dict (a tensor or a dict of tensors, batched).
    * ``loss(output, targets) -> LossOutput`` with ``targets`` the batched ``Prepared.target``.
    """

    def select(self, features: Features) -> dict[str, torch.Tensor]: ...

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]: ...

    def loss(self, output: torch.Tensor | dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> LossOutput: ...


class Task(typing.Protocol):
    """A downstream task: how a labelled sample becomes a network input and a target, which head
    learns it, how predictions go back to the original image, and how they are scored.

    A protocol (linear probe, frozen + head, fine-tune) drives it::

        prep = task.prepare(sample, train=True, rng=rng)       # Prepared(image, target, meta)
        head = task.build_head(backbone, train_set, linear=False)  # reads embed_dim, layer_dims
        out = head(head.select(backbone(backbone.preprocess(images))))
        head.loss(out, targets).loss.backward()
        ...
        outs = [head(head.select(backbone(x))) for x in task.test_views(images)]   # e.g. + flip
        preds = task.predict(outs, metas)                      # one per sample, original coordinates
        metrics = task.evaluate(preds, test_set)               # e.g. {"nme_inter_ocular": 0.041}

    Attributes:
        name: short task name used in result tables (``"landmarks"``).
        label: the :class:`~facerep.types.Sample` field it learns (``"landmarks"``).
        input_size: side of the square network input.
        primary_metric: the key of :meth:`evaluate` reported in summary tables and plots.
        higher_is_better: direction of ``primary_metric`` (False for NME).
        probe_label: a classification label (single class id or 0/1 vector) for the closed-form
            linear probe on pooled features, or None when the task's linear mode is a head trained
            by gradient descent (``build_head(..., linear=True)``).

    Optional attribute (API 1.1; protocols fall back when absent):
        ``probe_target: str | None``: a key of ``Prepared.target`` holding continuous values
        (e.g. ``"points"``, normalised landmark coordinates) that the linear probe fits by
        closed-form ridge regression on the probe's readout instead of training the linear head;
        ``predict`` then receives ``{probe_target: tensor shaped (B, *target shape)}`` per view.

    Optional methods (protocols fall back when absent):
        ``strata(dataset) -> (N,) int array | None``: classes for stratified few-shot sampling.
        ``groups(dataset) -> (N,) int array | None``: identities for K-shot-per-identity sampling.
        ``draw(sample, prediction) -> (H, W, 3) uint8``: a picture of a prediction for reports.
        ``head_spec(train) -> dict`` (API 1.3): the JSON-able facts about ``train`` the head is sized
        by (e.g. ``{"n_points": 68}``); a task that has it also accepts ``build_head(backbone, None,
        linear=..., spec=that dict)``, so that a trained model saved by an evaluation
        (``save_models: true``) is built again without its data (:mod:`facerep.eval.saved`).
        ``confidence(outputs, metas) -> list[float]`` (API 1.3): how sure each prediction is, in
        [0, 1] (``core.self_distill``'s ``threshold``; classification: the softmax maximum).
        ``pseudo_label(sample, prediction) -> Sample`` (API 1.3): the sample relabelled with a
        teacher's prediction (default: ``prediction`` set as the ``label`` field).
        ``outcomes(predictions, dataset) -> facerep.eval.outcomes.ItemOutcomes`` (API 1.5): the
        per-item terms of ``primary_metric`` (per image: right or wrong; per face: its NME; per
        pair and fold; per parsing image: its per-class pixel counts; for an agreement metric,
        ICC or CCC, per item the moment terms of ``facerep.eval.outcomes.moment_terms``), such that
        ``outcomes.metric()`` equals ``evaluate(...)[primary_metric]``. The eval runner stores them
        beside each record, and reports use them for intervals that count the test set's sampling
        and for paired comparisons item by item; without it, intervals count the seeds only.
    """

    name: str
    label: str
    input_size: int
    primary_metric: str
    higher_is_better: bool
    probe_label: str | None

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared: ...

    def build_head(self, backbone: Backbone, train: FaceDataset, *, linear: bool) -> nn.Module:
        """A :class:`Head` sized for ``backbone`` (``embed_dim``, ``layer_dims``; ``is_vit`` when
        present) and ``train`` (e.g. its number of classes). ``linear=True``: the task's linear
        probe (a single linear map from the selected features), used when ``probe_label`` is None."""

    def test_views(self, images: torch.Tensor) -> list[torch.Tensor]: ...

    def predict(self, outputs: list[typing.Any], metas: list[dict]) -> list[typing.Any]: ...

    def evaluate(self, predictions: list[typing.Any], dataset: FaceDataset) -> dict[str, float]: ...


class Protocol(typing.Protocol):  # type: ignore[no-redef]
    """A transfer protocol: fit on ``train`` (a few-shot subset), score on ``test``.

    ``run(backbone, task, train, test, val=None) -> EvalOutput`` (``facerep.eval.protocols``):
    ``metrics`` of the last epoch, plus ``val_*`` metrics and the best epoch's test metrics
    (``best_*``) when a ``val`` split is given; the epoch is chosen on ``val``, never on ``test``.
    Protocols put the backbone in ``eval()`` when it is frozen.
    """

    name: str

    def run(self, backbone: Backbone, task: Task, train: FaceDataset, test: FaceDataset, val: FaceDataset | None = None) -> typing.Any: ...
