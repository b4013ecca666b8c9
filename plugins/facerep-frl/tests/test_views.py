"""View transforms: multi-crop and aug-plus sizes, dtype, determinism."""

from __future__ import annotations

import numpy as np
from _frl_helpers import StubBackbone

from facerep.data.augment import ColorAugment
from facerep.types import Sample
from facerep_frl.moco import MoCoV2Objective, MoCoV2Params
from facerep_frl.swav import SwAVObjective, SwAVParams
from facerep_frl.views import MultiCropViews, TwoViews

NO_COLOR = ColorAugment(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, flip_p=0.0)


def _face(seed: int = 0, h: int = 80, w: int = 64) -> Sample:
    return Sample(image=np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def test_multicrop_gives_the_paper_crops_uint8_globals_first():
    transform = SwAVObjective(SwAVParams(), backbone=StubBackbone()).view_transform()  # 2 x 224 + 6 x 96
    views = transform(_face(), np.random.default_rng(0))
    assert [v.shape for v in views] == [(224, 224, 3)] * 2 + [(96, 96, 3)] * 6
    assert all(v.dtype == np.uint8 and v.flags.c_contiguous for v in views)
    other = transform(_face(1, 50, 70), np.random.default_rng(1))  # any input size: same view sizes
    assert [v.shape for v in other] == [v.shape for v in views]


def test_multicrop_is_a_function_of_sample_and_rng_only():
    transform = MultiCropViews(2, 32, (0.14, 1.0), 3, 16, (0.05, 0.14), SwAVParams().color)
    a = transform(_face(), np.random.default_rng(7))
    b = transform(_face(), np.random.default_rng(7))
    c = transform(_face(), np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert not np.array_equal(a[0], a[1])  # each crop has its own randomness


def test_crops_cover_their_area_range():
    # uniform-colour quadrants: a crop of the full image sees all four, a tiny one at most a few
    img = np.zeros((64, 64, 3), np.uint8)
    img[:32, 32:] = 80
    img[32:, :32] = 160
    img[32:, 32:] = 240
    full = MultiCropViews(1, 32, (1.0, 1.0), 0, 16, (0.05, 0.14), NO_COLOR)(Sample(image=img), np.random.default_rng(0))[0]
    assert full.shape == (32, 32, 3) and {0, 80, 160, 240} <= set(np.unique(full[::4, ::4, 0]).tolist())
    local = MultiCropViews(1, 32, (1.0, 1.0), 1, 16, (0.01, 0.01), NO_COLOR)(Sample(image=img), np.random.default_rng(3))[1]
    assert len(np.unique(local[..., 0])) <= 3


def test_aug_plus_gives_two_independent_views_of_the_configured_size():
    transform = MoCoV2Objective(MoCoV2Params(queue_size=8, view_size=48), backbone=StubBackbone()).view_transform()
    assert isinstance(transform, TwoViews) and transform.scale == (0.2, 1.0)
    a = transform(_face(), np.random.default_rng(0))
    b = transform(_face(), np.random.default_rng(0))
    assert [v.shape for v in a] == [(48, 48, 3)] * 2 and all(v.dtype == np.uint8 for v in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])


def test_without_augmentation_a_full_crop_is_the_resized_image():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, :10] = 200  # left half bright
    v0, _v1 = TwoViews(10, (1.0, 1.0), NO_COLOR)(Sample(image=img), np.random.default_rng(0))
    assert v0[:, :4].min() >= 150 and v0[:, -4:].max() <= 50
    flipped = TwoViews(10, (1.0, 1.0), ColorAugment(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=1.0))
    f0, _ = flipped(Sample(image=img), np.random.default_rng(0))
    assert np.array_equal(f0, v0[:, ::-1])

