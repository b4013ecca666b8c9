"""The expression task: augmentation determinism, stratified strata, frozen-head training on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.data.folder import expand_path
from facerep.data.subset import Subset
from facerep.eval.fewshot import fraction_subset
from facerep.eval.protocols import FrozenHead, FrozenHeadParams
from facerep.types import Sample
from facerep_expression.task import ExpressionClassification, ExpressionParams

FER = expand_path("${FACEREP_DATA}/fer2013")


def test_training_views_are_seeded_crops_and_test_views_the_whole_face():
    img = np.arange(48 * 48 * 3, dtype=np.uint8).reshape(48, 48, 3)
    task = ExpressionClassification(ExpressionParams(input_size=32))
    s = Sample(image=img, expression=4)
    a, b = (task.prepare(s, train=True, rng=np.random.default_rng(1)) for _ in range(2))
    assert np.array_equal(a.image, b.image) and a.image.shape == (32, 32, 3) and int(a.target["y"]) == 4
    views = {task.prepare(s, train=True, rng=np.random.default_rng(i)).image.tobytes() for i in range(8)}
    assert len(views) > 4
    t = task.prepare(s, train=False, rng=np.random.default_rng(0))
    assert t.meta["matrix"][0, 0] == pytest.approx(32 / 48)
    assert task.predict([torch.tensor([[0.1, 2.0, 0.0]]), torch.tensor([[0.0, 0.0, 3.0]])], [{}]) == [2]  # views averaged


@pytest.mark.realdata
@pytest.mark.skipif(not (FER / "train").is_dir(), reason="needs ../shared/data/fer2013 (or $FACEREP_DATA)")
def test_frozen_head_on_a_stratified_fer_subset():
    from facerep_expression.fer2013 import FER2013, FER2013Params

    train, test = FER2013(), FER2013(FER2013Params(split="test"))
    task = ExpressionClassification(ExpressionParams(input_size=32, head="linear"))
    idx = fraction_subset(len(train), 0.01, 0, task.strata(train))
    assert len(idx) == 101 and set(train.labels[idx]) == set(range(7))  # ceil(1 % of each class): disgust (138) keeps 2
    test_sub = Subset(test, np.arange(0, len(test), 30))
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model="resnet10t"))
    out = FrozenHead(FrozenHeadParams(epochs=20, min_steps=0, batch_size=32, lr=3e-3)).run(bb, task, Subset(train, idx), test_sub)
    assert out.history[-1]["loss"] < out.history[0]["loss"]
    assert set(out.metrics) >= {"acc", "mean_class_acc", "acc_happy", "acc_disgust"} and len(out.predictions) == len(test_sub)
