"""Face geometry (alignment, crops, inverse mapping) and few-shot subsets (seeded, nested, stratified)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from facerep.data import geometry as g
from facerep.data.subset import Subset, label_array
from facerep.errors import DataError
from facerep.eval.fewshot import FRACTIONS, fraction_subset, identity_subset
from facerep.testing.toy import NoiseFaces, NoiseParams


def test_similarity_recovers_a_known_transform_and_aligns_to_the_arcface_template():
    angle, scale, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = g.template("arcface", 112)
    dst = src @ rot.T + t
    m = g.similarity_matrix(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    # a face whose five points are the template moved and scaled lands exactly on the template
    back = g.similarity_matrix(dst, src)
    np.testing.assert_allclose(g.transform_points(dst, back), src, atol=1e-4)
    np.testing.assert_allclose(g.invert_affine(back), m, atol=1e-9)


def test_similarity_of_noisy_points_is_the_least_squares_solution():
    rng = np.random.default_rng(0)
    src = g.template("arcface", 112)
    dst = src * 2 + rng.normal(0, 1.0, src.shape)
    m = g.similarity_matrix(src, dst)
    err = ((g.transform_points(src, m) - dst) ** 2).sum()
    for d in (np.array([[1e-3, 0, 0], [0, 1e-3, 0]]), np.array([[0, 1e-3, 0], [-1e-3, 0, 0]]), np.array([[0, 0, 0.05], [0, 0, 0]])):
        assert ((g.transform_points(src, m + d) - dst) ** 2).sum() > err  # any similarity nudge fits worse


def test_templates_scale_with_the_crop_size():
    np.testing.assert_allclose(g.template("arcface", 224), g.ARCFACE_112 * 2)
    facer = g.template("facer", 448)
    np.testing.assert_allclose(facer[0], [196 * 448 / 512, 226 * 448 / 512])
    assert facer[0, 0] < facer[1, 0] and facer[2, 1] < facer[3, 1]  # left eye left of right eye, nose above mouth
    with pytest.raises(KeyError, match="unknown alignment template 'x'"):
        g.template("x", 10)


def test_warp_then_inverse_maps_points_and_pixels_back():
    img = np.zeros((100, 80, 3), np.uint8)
    img[40, 30] = 255  # one bright pixel
    box = np.array([20.0, 30.0, 60.0, 70.0])
    m = g.box_crop_matrix(box, 64, scale=1.25, rotation=0.2, shift=(0.05, -0.02))
    crop = g.warp(img, m, 64)
    y, x = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    px = g.transform_points(np.array([[30.0, 40.0]]), m)[0]
    assert abs(x - px[0]) <= 1 and abs(y - px[1]) <= 1
    back = g.transform_points(px[None], g.invert_affine(m))[0]
    np.testing.assert_allclose(back, [30.0, 40.0], atol=1e-3)
    # unshifted, unrotated: the box centre lands on the crop centre and the long side spans size/scale
    m0 = g.box_crop_matrix(box, 64, scale=1.25)
    np.testing.assert_allclose(g.transform_points(np.array([[40.0, 50.0]]), m0)[0], [31.5, 31.5], atol=1e-6)
    assert m0[0, 0] == pytest.approx(64 / 50)


def test_masks_warp_with_nearest_neighbour_keeping_class_ids():
    mask = np.zeros((50, 50), np.uint8)
    mask[10:40, 10:40] = 7
    out = g.warp(mask, g.box_crop_matrix(np.array([0, 0, 49, 49]), 37, rotation=0.3), 37, nearest=True)
    assert set(np.unique(out)) <= {0, 7}


def test_five_points_from_68_and_clear_errors():
    pts = np.zeros((68, 2), np.float32)
    pts[36:42] = [10, 20]
    pts[42:48] = [30, 20]
    pts[30] = [20, 30]
    pts[48], pts[54] = [12, 40], [28, 40]
    np.testing.assert_allclose(g.five_points(pts), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    with pytest.raises(DataError, match="no 5-point rule for a 67-point"):
        g.five_points(pts[:67])


@pytest.mark.parametrize("strata", [None, np.arange(1000) % 7])
def test_fractions_are_seeded_nested_and_sized(strata):
    subsets = [fraction_subset(1000, f, seed=3, strata=strata) for f in FRACTIONS]
    for small, big in itertools.pairwise(subsets):
        assert set(small) <= set(big)  # nested
    assert len(subsets[-1]) == 1000 and len(np.unique(subsets[0])) == len(subsets[0])
    if strata is None:
        assert [len(s) for s in subsets] == [10, 20, 50, 100, 200, 1000]
    else:  # every class is present even at 1 %, with ceil(f * n_c) members
        for f, s in zip(FRACTIONS, subsets, strict=True):
            counts = np.bincount(strata[s], minlength=7)
            assert (counts == np.ceil(f * np.bincount(strata) - 1e-9).astype(int)).all()
    np.testing.assert_array_equal(fraction_subset(1000, 0.1, 3, strata), subsets[3])  # reproducible
    assert not np.array_equal(fraction_subset(1000, 0.1, 4, strata), subsets[3])  # seed matters


def test_identity_subsets_nest_in_shots_and_identity_fraction():
    groups = np.repeat(np.arange(50), 12)
    one = identity_subset(groups, 0.2, 1, seed=0)
    four = identity_subset(groups, 0.2, 4, seed=0)
    more_ids = identity_subset(groups, 0.5, 4, seed=0)
    assert len(one) == 10 and len(four) == 40 and len(np.unique(groups[four])) == 10
    assert set(one) <= set(four) <= set(more_ids)
    assert (np.bincount(groups[four])[np.unique(groups[four])] == 4).all()
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        identity_subset(groups, 0.0, 1, 0)


def test_subset_keeps_indices_and_reads_labels():
    ds = NoiseFaces(NoiseParams(n=10))
    sub = Subset(ds, np.array([1, 4, 5]))
    assert len(sub) == 3 and sub[1].meta["path"] == "noise://4"
    np.testing.assert_array_equal(label_array(sub, "expression"), [1, 0, 1])
    assert label_array(ds, "landmarks") is None
    with pytest.raises(IndexError, match="out of range for noise"):
        Subset(ds, np.array([10]))


def test_cv2_is_the_warp_backend():  # documents the convention: cv2.warpAffine, pixel centres at integers
    m = np.array([[1.0, 0, 2], [0, 1, 0]])
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(g.warp(img, m, 4, nearest=True), cv2.warpAffine(img, m, (4, 4), flags=cv2.INTER_NEAREST))
