"""The attribute task: FaRL's pooled head by hand, metrics, and a short real-data head training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.data.folder import expand_path
from facerep.eval.protocols import FrozenHead, FrozenHeadParams
from facerep.types import Features
from facerep_attributes.task import AttributeParams, FaceAttributes, PooledAttributeHead

CELEBA = expand_path("${FACEREP_DATA}/celeba")


def test_pooled_head_is_a_softmax_weighted_sum_of_normed_mean_max_cls():
    torch.manual_seed(0)
    head = PooledAttributeHead(dim=4, n_layers=2, has_cls=True, n_out=3)
    layers = [torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)]
    cls = [torch.randn(2, 4), torch.randn(2, 4)]
    feats = Features(pooled=cls[-1], tokens=layers[-1].flatten(2).transpose(1, 2), layers=layers, layer_cls=cls)
    stack = head.select(feats)["stack"]
    assert stack.shape == (2, 6, 4)
    torch.testing.assert_close(stack[:, 0], layers[0].flatten(2).mean(2))
    torch.testing.assert_close(stack[:, 4], layers[1].flatten(2).amax(2))
    torch.testing.assert_close(stack[:, 5], cls[1])
    with torch.no_grad():
        head.weights.copy_(torch.tensor([0.0, 1.0, 2.0, 0.0, 0.0, -1.0]))
    w = torch.softmax(head.weights, 0)
    normed = [torch.nn.functional.layer_norm(stack[:, i], (4,)) for i in range(6)]  # fresh LayerNorms: identity affine
    expect = head.fc(sum(w[i] * normed[i] for i in range(6)))
    torch.testing.assert_close(head({"stack": stack}), expect)


def test_prepare_flips_only_in_training_and_predictions_score_by_attribute():
    from facerep.types import Sample

    img = np.zeros((20, 10, 3), np.uint8)
    img[:, :5] = 255
    s = Sample(image=img, attributes=np.array([1, 0, 1], np.uint8))
    task = FaceAttributes(AttributeParams(input_size=8))
    flips = [task.prepare(s, train=True, rng=np.random.default_rng(i)).image[0, 0, 0] for i in range(20)]
    assert set(flips) == {0, 255}
    assert task.prepare(s, train=False, rng=np.random.default_rng(0)).image[0, 0, 0] == 255
    preds = task.predict([torch.tensor([[2.0, -1.0, -3.0], [1.0, 1.0, 1.0]])], [{}, {}])
    np.testing.assert_array_equal(np.stack(preds), [[1, 0, 0], [1, 1, 1]])


@pytest.mark.realdata
@pytest.mark.skipif(not (CELEBA / "list_attr_celeba.txt").is_file(), reason="needs ../shared/data/celeba (or $FACEREP_DATA)")
def test_frozen_pooled_head_learns_celeba_attributes_from_a_tiny_vit():
    from facerep_attributes.celeba import CelebA, CelebAParams

    train = CelebA(CelebAParams(stop=96))
    test = CelebA(CelebAParams(start=9901, split="test"))
    assert train.label_array("attributes").shape == (96, 40) and len(test) == 100
    assert train.label_array("identity").dtype == np.int64
    torch.manual_seed(0)
    vit = TimmBackbone(
        TimmBackboneParams(model="vit_tiny_patch16_224", img_size=32, patch_size=8, layers=(1, 3), model_kwargs={"depth": 4})
    )
    task = FaceAttributes(AttributeParams(input_size=32))
    out = FrozenHead(FrozenHeadParams(epochs=30, min_steps=0, batch_size=32, lr=3e-3)).run(vit, task, train, test)
    assert out.history[-1]["loss"] < out.history[0]["loss"] - 0.1
    majority = (test.label_array("attributes") == (train.label_array("attributes").mean(0) > 0.5)).mean()
    assert out.metrics["mean_acc"] > majority - 0.02 and "acc_Smiling" in out.metrics
    assert task.draw(test[0], out.predictions[0]).dtype == np.uint8
