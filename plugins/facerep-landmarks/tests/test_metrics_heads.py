"""NME normalisers, FR/AUC, soft-argmax, Gaussian targets, the inverse crop mapping, and a short
frozen-head training on real AFW faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.data.folder import expand_path
from facerep.eval.protocols import FrozenHead, FrozenHeadParams
from facerep.types import Sample
from facerep_landmarks.heads import HeatmapHead, gaussian_targets, point_loss, soft_argmax
from facerep_landmarks.metrics import auc_fr, landmark_metrics, nme, normaliser
from facerep_landmarks.task import AlignmentParams, LandmarkAlignment


def test_nme_normalisers_by_hand():
    gt = np.zeros((1, 68, 2))
    gt[0, :, 0] = np.arange(68)  # all on a line: x = index
    gt[0, 36:42, 1] = 0.0
    gt[0, 42:48, 1] = 0.0
    gt[0, 67, 1] = 30.0  # box: w 67, h 30
    assert normaliser(gt, "inter_ocular", "68")[0] == pytest.approx(45 - 36)
    assert normaliser(gt, "inter_pupil", "68")[0] == pytest.approx(44.5 - 38.5)
    assert normaliser(gt, "box", "68")[0] == pytest.approx(np.sqrt(67 * 30))
    assert normaliser(gt, "diagonal", "68")[0] == pytest.approx(np.sqrt(67**2 + 30**2))
    pred = gt.copy()
    pred[0, :34, 0] += 3.0  # half the points off by 3 px: mean error 1.5 px
    m = landmark_metrics(pred, gt, "68")
    assert m["nme_inter_ocular"] == pytest.approx(1.5 / 9) and m["nme_inter_pupil"] == pytest.approx(1.5 / 6)
    five = np.array([[[10.0, 10], [30, 10], [20, 20], [12, 30], [28, 30]]])
    assert nme(five + np.array([0, 2]), five, normaliser(five, "inter_ocular", "5"))[0] == pytest.approx(0.1)


def test_auc_and_failure_rate_by_hand():
    auc, fr = auc_fr(np.array([0.0, 0.05, 0.2]), 0.1)
    # CED: 1/3 on [0, .05), 2/3 on [.05, .1]: area = (.05/3 + .05*2/3) / .1 = 0.5
    assert fr == pytest.approx(1 / 3) and auc == pytest.approx(0.5, abs=2e-3)
    assert auc_fr(np.zeros(4), 0.08) == (pytest.approx(1.0), 0.0)


def test_soft_argmax_and_gaussian_targets_agree_on_pixel_centres():
    pts = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])  # normalised
    g = gaussian_targets(pts, 16, 16, radius=3.0)
    # centres fall between pixels (x = 0.25 * 16 - 0.5 = 3.5): the nearest four cells are at
    # distance^2 0.5, sigma = 3 / 4, so the peak is exp(-0.5 / (2 * 0.5625))
    assert g.shape == (1, 2, 16, 16) and g.max() == pytest.approx(np.exp(-0.5 / 1.125), rel=1e-5)
    assert g[0, 0, 11, 3] == g[0, 0, 12, 4] == pytest.approx(np.exp(-0.5 / 1.125), rel=1e-5)
    assert g[0, 0, 11, 7] == 0  # 3.5 px > radius: truncated
    torch.testing.assert_close(soft_argmax(g), pts, atol=1e-4, rtol=0)  # symmetric blobs: exact centre
    assert point_loss(torch.zeros(1, 2, 2), torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])) == pytest.approx(2.5)


def test_prepare_then_predict_maps_back_to_the_original_landmarks():
    rng = np.random.default_rng(0)
    pts = rng.uniform(40, 160, size=(68, 2)).astype(np.float32)
    s = Sample(image=np.zeros((200, 220, 3), np.uint8), landmarks=pts)
    task = LandmarkAlignment(AlignmentParams(input_size=64))
    for train in (False, True):
        prep = task.prepare(s, train=train, rng=np.random.default_rng(3))
        assert prep.image.shape == (64, 64, 3) and ((prep.target["points"] > 0) & (prep.target["points"] < 1)).all()
        back = task.predict([{"points": torch.from_numpy(prep.target["points"][None])}], [prep.meta])[0]
        np.testing.assert_allclose(back, pts, atol=1e-3)


AFW = expand_path("${FACEREP_DATA}/300w/afw")


@pytest.mark.realdata
@pytest.mark.skipif(not AFW.is_dir(), reason="needs ../shared/data/300w/afw (or $FACEREP_DATA)")
def test_frozen_heatmap_head_learns_on_real_afw_faces():
    from facerep.data.subset import Subset
    from facerep_landmarks.readers import PtsFolder, PtsFolderParams

    train = Subset(PtsFolder(PtsFolderParams(stop=237)), np.arange(0, 237, 6))
    test = Subset(PtsFolder(PtsFolderParams(start=237, split="test")), np.arange(0, 100, 5))
    torch.manual_seed(0)
    vit = TimmBackbone(
        TimmBackboneParams(model="vit_tiny_patch16_224", img_size=32, patch_size=8, layers=(0, 1, 2, 3), model_kwargs={"depth": 4})
    )
    task = LandmarkAlignment(AlignmentParams(input_size=32, channels=32))
    head = task.build_head(vit, train, linear=False)
    assert isinstance(head, HeatmapHead)
    out = FrozenHead(FrozenHeadParams(epochs=40, min_steps=0, batch_size=20, lr=3e-3)).run(vit, task, train, test)
    assert out.history[-1]["loss"] < out.history[0]["loss"]
    # better than predicting the mean shape in the crop would be a stretch here; sanity: errors are bounded
    assert 0 < out.metrics["nme_inter_ocular"] < 1.0 and "auc@0.1" in out.metrics and len(out.predictions) == 20
    assert task.draw(test[0], out.predictions[0]).shape == test[0].image.shape


@pytest.mark.realdata
@pytest.mark.skipif(not AFW.is_dir(), reason="needs ../shared/data/300w/afw (or $FACEREP_DATA)")
def test_linear_probe_regresses_points_in_closed_form_and_beats_the_mean_shape_on_real_afw():
    from facerep.backbones.pixels import PixelBackbone, PixelsParams
    from facerep.data.subset import Subset
    from facerep.eval.linear_probe import LinearProbe, LinearProbeParams
    from facerep_landmarks.readers import PtsFolder, PtsFolderParams

    train = Subset(PtsFolder(PtsFolderParams(stop=237)), np.arange(0, 237, 2))
    test = Subset(PtsFolder(PtsFolderParams(start=237, split="test")), np.arange(0, 100, 2))
    task = LandmarkAlignment(AlignmentParams(input_size=48))
    assert task.probe_target == "points"
    # the mean shape of the training crops, mapped back into each test image: the no-feature baseline
    rng = np.random.default_rng(0)
    mean_shape = np.mean([task.prepare(train[i], train=False, rng=rng).target["points"] for i in range(len(train))], 0)
    metas = [task.prepare(test[i], train=False, rng=rng).meta for i in range(len(test))]
    flat = task.evaluate(task.predict([{"points": torch.from_numpy(np.repeat(mean_shape[None], len(test), 0))}], metas), test)

    class Constant(PixelBackbone):  # features that carry nothing: the probe must give the mean shape
        def forward(self, x):
            out = super().forward(x)
            out.pooled = torch.zeros_like(out.pooled)
            return out

    p = LinearProbeParams(device="cpu")
    const = LinearProbe(p).run(Constant(PixelsParams(size=16, grey=True)), task, train, test)
    assert const.metrics["nme_inter_ocular"] == pytest.approx(flat["nme_inter_ocular"], rel=1e-6)
    pixels = LinearProbe(p).run(PixelBackbone(PixelsParams(size=16, grey=True)), task, train, test)
    assert pixels.metrics["loo_mse"] < 0.9 * pixels.metrics["loo_mse_mean_predictor"]
    assert pixels.metrics["nme_inter_ocular"] < 0.9 * flat["nme_inter_ocular"]
    assert len(pixels.predictions) == len(test) and pixels.predictions[0].shape == (68, 2)
    from facerep.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dataset afw.*needs at least 3 training samples, got 2"):
        LinearProbe(p).run(PixelBackbone(PixelsParams(size=16, grey=True)), task, Subset(train, np.arange(2)), test)
