"""LAFS views: landmarks carried from the clean crop (checked against the pixels), mirror
re-ordering, Gaussian perturbation statistics, with-replacement subsets for local views."""

from __future__ import annotations

import numpy as np
import pytest

from facerep.data.augment import ColorAugment
from facerep.errors import DataError
from facerep.types import Sample
from facerep_lafs.views import LandmarkViews

PLAIN = ColorAugment(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0)


def _views(**kw) -> LandmarkViews:
    base = dict(size=64, scale=(0.4, 1.0), global_crops=2, local_crops=3, local_landmarks=5, sigma=0.0, flip_p=0.5,
                flip_order=None, colours=(PLAIN, PLAIN, PLAIN), n_landmarks=4)
    return LandmarkViews(**{**base, **kw})


def _dots(size: int = 96) -> Sample:
    """Four coloured dots on black; the landmarks are their centres."""
    img = np.zeros((size, size, 3), np.uint8)
    pts = np.array([[20, 30], [70, 25], [40, 60], [75, 80]], np.float32)
    for k, (x, y) in enumerate(pts.astype(int)):
        img[y - 2 : y + 3, x - 2 : x + 3, k % 3] = 255
    return Sample(image=img, landmarks=pts)


def _brightest(img: np.ndarray, channel: int, near: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of the dot of ``channel`` nearest ``near``."""
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    w = img[..., channel].astype(float) * (np.hypot(xs - near[0], ys - near[1]) < 8)
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_points_follow_the_crop_and_the_mirror_of_the_clean_image():
    flip = np.array([1, 0, 2, 3])  # dots 0 and 1 are each other's mirror image in this toy scheme
    sample = _dots()
    flipped = 0
    for seed in range(12):
        out = _views(flip_order=flip, local_crops=0)(sample, np.random.default_rng(seed))
        for img, pts in zip(out.images, out.extras["global_points"], strict=True):
            mirrored = _is_mirrored(img, pts, flip)
            for k in range(4):
                x, y = pts[k]
                if not (3 <= x <= 60 and 3 <= y <= 60):
                    continue  # the dot left the crop
                dot = flip[k] if mirrored else k  # after a mirror, point k is the mirror image of dot flip[k]
                np.testing.assert_allclose(_brightest(img, dot % 3, pts[k]), pts[k], atol=1.0)
            flipped += mirrored
    assert 0 < flipped < 24, "flip_p 0.5 flips some views and not others"


def _is_mirrored(img: np.ndarray, pts: np.ndarray, flip: np.ndarray) -> bool:
    """Point 0 sits on dot 1's colour (green) when the view is a mirror image (indices re-ordered)."""
    x, y = np.round(pts[0]).astype(int)
    if not (0 <= x < img.shape[1] and 0 <= y < img.shape[0]):
        return False
    return bool(img[y, x, 1] > img[y, x, 0])


def test_perturbation_is_gaussian_with_sigma_scaled_to_112_px():
    sample = _dots()
    clean, noisy = [], []
    for seed in range(150):  # same seed: the same crops and subsets (the normal draws are made either way)
        clean.append(_views(sigma=0.0, size=56)(sample, np.random.default_rng(seed)).extras["global_points"])
        noisy.append(_views(sigma=5.0, size=56)(sample, np.random.default_rng(seed)).extras["global_points"])
    d = (np.stack(noisy) - np.stack(clean)).ravel()
    assert abs(d.mean()) < 0.15 and d.std() == pytest.approx(2.5, rel=0.08)  # 5 px at 112 -> 2.5 px at 56


def test_local_views_draw_landmark_indices_uniformly_with_replacement():
    lm = np.array([[10, 10], [50, 10], [10, 50], [50, 50]], np.float32)
    sample = Sample(image=np.zeros((64, 64, 3), np.uint8), landmarks=lm)
    t = _views(scale=(1.0, 1.0), size=64, local_crops=4, local_landmarks=6)  # whole image, same size: points unchanged
    counts, repeats = np.zeros(4), 0
    for seed in range(200):
        local = t(sample, np.random.default_rng(seed)).extras["local_points"]
        assert local.shape == (4, 6, 2) and local.dtype == np.float32
        idx = np.array([[int(np.argmin(np.abs(lm - p).sum(1))) for p in view] for view in local])
        np.testing.assert_allclose(local, lm[idx], atol=1e-4)
        counts += np.bincount(idx.ravel(), minlength=4)
        repeats += sum(len(set(row)) < 6 for row in idx)
    assert repeats == 800, "6 draws from 4 indices always repeat: drawn with replacement"
    np.testing.assert_allclose(counts / counts.sum(), 0.25, atol=0.02)


def test_views_are_the_configured_sizes_and_a_sample_without_landmarks_is_named():
    out = _views()(_dots(), np.random.default_rng(0))
    assert len(out.images) == 5 and all(v.shape == (64, 64, 3) and v.dtype == np.uint8 for v in out.images)
    assert out.extras["global_points"].shape == (2, 4, 2) and out.extras["local_points"].shape == (3, 5, 2)
    with pytest.raises(DataError, match=r"face\.jpg: LAFS needs 4 landmarks per image, got none"):
        _views()(Sample(image=np.zeros((8, 8, 3), np.uint8), meta={"path": "face.jpg"}), np.random.default_rng(0))
    with pytest.raises(DataError, match=r"got shape \(5, 2\)"):
        _views()(Sample(image=np.zeros((8, 8, 3), np.uint8), landmarks=np.zeros((5, 2), np.float32)), np.random.default_rng(0))
