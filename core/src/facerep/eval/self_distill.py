"""Semi-supervised self-distillation (FRL, Bulat et al. ECCV 2022 §3.3 / §5.4): the transfer
protocol that also uses the training images whose labels the few-shot split hides.

1. **Teacher**: fine-tune the pretrained backbone + the task's head on the labelled subset (plain
   ``core.finetune``, or ``core.frozen_head`` with ``mode: frozen_head``).
2. **Pseudo-labels**: the teacher predicts every image of the unlabelled pool, which is exactly the
   complement of the few-shot subset in the training split (subsets are nested and seeded, so the
   pool is too). The task decides the form: its ``predict`` output in original image coordinates
   (class ids, 0/1 attribute vectors, landmark coordinates, parsing maps) becomes the sample's label
   (``task.pseudo_label(sample, prediction)`` when the task has one, else the ``task.label``
   field). With ``threshold > 0`` only predictions whose ``task.confidence`` reaches it are kept
   (classification tasks: the softmax maximum; multi-label: the mean of max(p, 1 - p)).
3. **Student**: the same pretrained weights (not the teacher's), trained the same way on the
   labelled subset plus the kept pseudo-labelled images.

Reported: the student's metrics, the teacher's as ``teacher_*``, and ``n_pseudo`` / ``n_pseudo_kept``;
the teacher is also a record of its own (protocol ``core.self_distill:teacher``, with its per-item
outcomes), so that ``facerep report`` gives the student's gap to it with a paired 95 % interval.
A student that beats its teacher is the protocol's claim: the teacher *is* plain fine-tuning from
the same weights with the same budget.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np

from facerep.config import structure
from facerep.data.subset import Subset, label_array
from facerep.errors import ConfigError
from facerep.eval.protocols import (
    EvalOutput,
    FineTune,
    FineTuneParams,
    FrozenHead,
    FrozenHeadParams,
    head_outputs,
    no_feature_cache,
)
from facerep.protocols import Backbone, FaceDataset, Task
from facerep.types import DatasetInfo, Sample

__all__ = ["PseudoLabelled", "SelfDistill", "SelfDistillParams", "pseudo_labels"]


@attrs.frozen
class SelfDistillParams:
    """Attributes:
    mode: ``finetune`` (FRL's) or ``frozen_head`` (the backbone stays frozen; cheap on a CPU).
    teacher: the teacher's training parameters (``core.finetune``'s, or the ``core.frozen_head``
        subset of them in ``frozen_head`` mode).
    student: the student's; empty: the teacher's. The student sees (1 / fraction) times more images
        per epoch: fewer epochs keep the budget comparable.
    threshold: keep pseudo-labels whose confidence is at least this (0: all; needs ``task.confidence``).
    max_unlabelled: use at most this many pool images (a seeded sample; None: the whole pool).
    """

    mode: Literal["finetune", "frozen_head"] = "finetune"
    teacher: dict[str, Any] = attrs.field(factory=dict)
    student: dict[str, Any] = attrs.field(factory=dict)
    threshold: float = 0.0
    max_unlabelled: int | None = None
    seed: int = 0


class PseudoLabelled:
    """Pool images with the teacher's predictions as their labels."""

    def __init__(self, pool: FaceDataset, predictions: list[Any], task: Task) -> None:
        self.pool, self.predictions, self.task = pool, predictions, task
        self.info: DatasetInfo = attrs.evolve(pool.info, split=f"{pool.info.split}[pseudo]",
                                              labels=tuple(dict.fromkeys((*pool.info.labels, task.label))))

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, index: int) -> Sample:
        sample, pred = self.pool[index], self.predictions[index]
        relabel = getattr(self.task, "pseudo_label", None)
        if relabel is not None:
            return relabel(sample, pred)
        setattr(sample, self.task.label, np.asarray(pred) if np.ndim(pred) else pred)
        return sample

    def label_array(self, field: str) -> np.ndarray | None:
        if field == self.task.label:
            values = [np.asarray(p) for p in self.predictions]
            return np.stack(values) if len({v.shape for v in values}) == 1 else None  # e.g. masks of several image sizes
        return None  # never the pool's own annotations: they are what the split hides


class _Joined:
    """Labelled subset followed by the pseudo-labelled images."""

    def __init__(self, labelled: FaceDataset, pseudo: PseudoLabelled) -> None:
        self.parts, self.info = (labelled, pseudo), attrs.evolve(labelled.info, split=f"{labelled.info.split}+pseudo")
        self.offset = len(labelled)

    def __len__(self) -> int:
        return self.offset + len(self.parts[1])

    def __getitem__(self, index: int) -> Sample:
        return self.parts[0][index] if index < self.offset else self.parts[1][index - self.offset]

    def label_array(self, field: str) -> np.ndarray | None:
        a, b = (label_array(p, field) for p in self.parts)
        return None if a is None or b is None else np.concatenate([a, b.astype(a.dtype, copy=False)])


def pseudo_labels(backbone: Backbone, head: Any, task: Task, pool: FaceDataset, *, batch_size: int = 64, num_workers: int = 0,
                  precision: str = "fp32") -> tuple[list[Any], np.ndarray]:
    """The teacher's predictions on ``pool`` (original coordinates) and their confidences (1 where
    the task defines none)."""
    confidence = getattr(task, "confidence", None)
    preds: list[Any] = []
    conf: list[float] = []
    for outs, metas in head_outputs(backbone, head, task, pool, batch_size=batch_size, num_workers=num_workers, precision=precision):
        preds.extend(task.predict(outs, metas))
        conf.extend(confidence(outs, metas) if confidence is not None else [1.0] * len(metas))
    return preds, np.asarray(conf, np.float64)


class SelfDistill:
    """Teacher on the labelled subset, pseudo-labels on its complement, student on both."""

    name = "self_distill"

    def __init__(self, params: SelfDistillParams | None = None) -> None:
        self.params = p = params or SelfDistillParams()
        cls = FineTuneParams if p.mode == "finetune" else FrozenHeadParams
        where = "protocol.params"
        self.teacher = structure({**p.teacher, "seed": p.seed}, cls, path=f"{where}.teacher")
        self.student = structure({**(p.student or p.teacher), "seed": p.seed}, cls, path=f"{where}.student")

    def _protocol(self, params: Any) -> Any:
        return FineTune(params) if self.params.mode == "finetune" else FrozenHead(params)

    def _pool(self, train: FaceDataset) -> Subset:
        if not isinstance(train, Subset):
            raise ConfigError("self_distill: the training set must be a few-shot subset of a training split "
                              "(an evaluate entry's fractions); its complement is the unlabelled pool")
        rest = np.setdiff1d(np.arange(len(train.dataset)), train.indices)
        cap = self.params.max_unlabelled
        if cap is not None and len(rest) > cap:
            rest = np.sort(np.random.default_rng([self.params.seed, 7]).choice(rest, cap, replace=False))
        return Subset(train.dataset, rest, split=f"{train.dataset.info.split}[unlabelled]")

    def run(self, backbone: Backbone, task: Task, train: FaceDataset, test: FaceDataset, val: FaceDataset | None = None) -> EvalOutput:
        p = self.params
        if task.label == "identity":
            raise ConfigError(f"self_distill: task {task.name} predicts embeddings, not labels it could train on")
        if p.threshold > 0 and not hasattr(task, "confidence"):
            raise ConfigError(f"protocol.params.threshold: task {task.name} gives no confidence for its predictions; use 0")
        pool = self._pool(train)
        teacher = self._protocol(self.teacher).run(backbone, task, train, test, val)
        metrics = {f"teacher_{k}": v for k, v in teacher.metrics.items()}
        if len(pool) == 0:  # fraction 1: nothing unlabelled, the student would repeat the teacher
            return EvalOutput({**teacher.metrics, **metrics, "n_pseudo": 0.0, "n_pseudo_kept": 0.0}, teacher.predictions,
                              teacher.history, backbone=teacher.backbone, head=teacher.head)
        preds, conf = pseudo_labels(teacher.backbone, teacher.head, task, pool, batch_size=self.teacher.batch_size,
                                    num_workers=self.teacher.num_workers, precision=self.teacher.precision)
        keep = np.flatnonzero(conf >= p.threshold)
        kept = PseudoLabelled(Subset(pool, keep), [preds[i] for i in keep], task)
        with no_feature_cache():  # the pseudo-labelled set is a new object each run: never a cache key
            student = self._protocol(self.student).run(backbone, task, _Joined(train, kept) if len(keep) else train, test, val)
        metrics.update(student.metrics, n_pseudo=float(len(pool)), n_pseudo_kept=float(len(keep)))
        history = [{**row, "stage": 0.0} for row in teacher.history] + [{**row, "stage": 1.0} for row in student.history]
        # the teacher as its own row too (predictions only: its network is not kept), so that student vs
        # teacher is paired by test item, not only by seed
        return EvalOutput(metrics, student.predictions, history, backbone=student.backbone, head=student.head,
                          reference=EvalOutput(teacher.metrics, teacher.predictions), reference_name="teacher")
