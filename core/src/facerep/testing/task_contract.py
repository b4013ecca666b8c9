"""Contract suite for tasks: every registered task, driven by core's protocols on CPU.

::

    from facerep.testing import TaskContract

    class TestAlignment(TaskContract):
        component = "landmarks.alignment"
        params = {"input_size": 32}

The suite builds the task (``params`` over its defaults) and a 4-block ViT-Tiny with four pyramid
layers at the task's ``input_size``, on ``dataset()`` (default: synthetic faces, which carry
identity, 68 landmarks, a 19-class mask, attributes and expression; identities also form
LFW-style ``pairs``). It checks: ``prepare`` is deterministic for a given rng and gives same-shape
uint8 images and targets; the head's ``select`` holds batched tensors and its loss backpropagates;
the frozen, linear and fine-tuning protocols return one prediction per test sample and a finite
``primary_metric``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import numpy as np

__all__ = ["PairedFaces", "TaskContract", "build_task"]


class PairedFaces:
    """A dataset plus LFW-style verification ``pairs`` (index a, index b, same) and ``folds``,
    built from its identities: alternately a same-identity and a different-identity pair."""

    def __init__(self, dataset: Any, n_pairs: int = 20, seed: int = 0) -> None:
        self.dataset, self.info = dataset, dataset.info
        ids = np.array([dataset[i].identity for i in range(len(dataset))])
        rng = np.random.default_rng(seed)
        pairs = []
        while len(pairs) < n_pairs:
            a = int(rng.integers(len(ids)))
            same = len(pairs) % 2 == 0
            pool = np.flatnonzero((ids == ids[a]) if same else (ids != ids[a]))
            pool = pool[pool != a]
            if len(pool):
                pairs.append((a, int(rng.choice(pool)), int(same)))
        self.pairs = np.array(pairs, dtype=np.int64)
        self.folds = np.arange(len(self.pairs)) % 10

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]

    def label_array(self, field: str) -> np.ndarray | None:
        from facerep.data.subset import label_array

        return label_array(self.dataset, field)


def build_task(name: str, params: dict[str, Any] | None = None) -> Any:
    from facerep.plugins import get_plugins

    spec = get_plugins().get("task", name)
    cls = spec.load_params()
    target = spec.load()
    if cls is None:
        return target()
    base = cls.tiny() if hasattr(cls, "tiny") else cls()
    return target(attrs.evolve(base, **(params or {})))


class TaskContract:
    component: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {"input_size": 32}

    def dataset(self, split: str, n: int) -> Any:
        from facerep.data.synthetic import SyntheticParams, build_synthetic

        return PairedFaces(build_synthetic(SyntheticParams(n=n, size=64, n_identities=4, seed=0 if split == "train" else 1, split=split)))

    def _setup(self) -> tuple[Any, Any, Any, Any]:
        import pytest
        import torch

        from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams

        task = build_task(self.component, self.params)
        train, test = self.dataset("train", 12), self.dataset("test", 8)
        if train[0].label(task.label) is None:
            pytest.skip(f"{self.component}: the contract dataset has no {task.label!r} labels")
        torch.manual_seed(0)
        backbone = TimmBackbone(TimmBackboneParams(model="vit_tiny_patch16_224", img_size=task.input_size, patch_size=8,
                                                   layers=(0, 1, 2, 3), model_kwargs={"depth": 4}))
        return task, train, test, backbone

    def test_prepare_is_deterministic_and_batchable(self) -> None:
        task, train, _, _ = self._setup()
        a = task.prepare(train[0], train=True, rng=np.random.default_rng(5))
        b = task.prepare(train[0], train=True, rng=np.random.default_rng(5))
        c = task.prepare(train[1], train=False, rng=np.random.default_rng(0))
        s = task.input_size
        assert a.image.dtype == np.uint8 and a.image.shape == (s, s, 3) and c.image.shape == (s, s, 3)
        assert np.array_equal(a.image, b.image), "prepare must draw its randomness from the rng it is given"
        assert a.target.keys() == c.target.keys()
        for k in a.target:
            assert np.asarray(a.target[k]).shape == np.asarray(c.target[k]).shape, f"target {k!r} changes shape between samples"
            assert np.array_equal(np.asarray(a.target[k]), np.asarray(b.target[k]))

    def test_head_selects_batched_inputs_and_its_loss_backpropagates(self) -> None:
        import torch

        from facerep.eval.protocols import collate_prepared

        task, train, _, backbone = self._setup()
        head = task.build_head(backbone, train, linear=False)
        images, targets, _ = collate_prepared([task.prepare(train[i], train=True, rng=np.random.default_rng(i)) for i in range(4)])
        with torch.no_grad():
            feats = backbone(backbone.preprocess(images))
        inputs = head.select(feats)
        assert inputs and all(v.shape[0] == 4 for v in inputs.values())
        out = head.loss(head(inputs), targets)
        assert out.loss.ndim == 0 and math.isfinite(float(out.loss.detach()))
        out.loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())

    def test_frozen_linear_and_finetune_protocols_score_every_test_sample(self) -> None:
        from facerep.eval.linear_probe import LinearProbe, LinearProbeParams
        from facerep.eval.protocols import FineTune, FineTuneParams, FrozenHead, FrozenHeadParams

        task, train, test, backbone = self._setup()
        for protocol in (FrozenHead(FrozenHeadParams(epochs=2, min_steps=0, batch_size=4)),
                         LinearProbe(LinearProbeParams(l2_grid=(1e-2,), max_iter=20)),
                         FineTune(FineTuneParams(epochs=1, min_steps=0, batch_size=4))):
            out = protocol.run(backbone, task, train, test)
            assert len(out.predictions) == len(test)
            assert task.primary_metric in out.metrics and math.isfinite(out.metrics[task.primary_metric]), out.metrics
            if hasattr(task, "outcomes"):  # API 1.5: the per-item terms reproduce the primary metric
                items = task.outcomes(out.predictions, test)
                assert len(items) > 0 and items.num.shape == items.den.shape
                want = out.metrics[task.primary_metric]
                assert abs(items.metric() - want) <= 1e-9 * max(1.0, abs(want)), (
                    f"{self.component}.outcomes(...).metric() = {items.metric()} but evaluate gave {task.primary_metric} {want}")
