"""Augmentation primitives: torchvision semantics, explicit RNG, image decoding errors."""

from __future__ import annotations

import colorsys

import attrs
import cv2
import numpy as np
import pytest

from facerep.data.augment import (
    ColorAugment,
    adjust_color,
    color_jitter,
    crop_resize,
    crop_resize_points,
    decode_image,
    gaussian_blur,
    hflip,
    random_resized_crop,
    sample_color_jitter,
    sample_resized_crop_box,
    solarize,
    to_grayscale,
)
from facerep.errors import DataError


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    """A smooth colourful image plus texture (so crops, blur and colour ops all do something)."""
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    base = np.stack([xx * 4, yy * 5, 255 - xx * 2 - yy * 2], -1)
    noise = np.random.default_rng(0).normal(0, 20, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _luma(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# --- crops ---------------------------------------------------------------------------------------


def test_crop_boxes_respect_scale_ratio_and_bounds():
    rng = np.random.default_rng(0)
    h, w = 120, 160
    areas, ratios = [], []
    for _ in range(3000):
        y0, x0, ch, cw = sample_resized_crop_box(h, w, (0.14, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= y0 and 0 <= x0 and y0 + ch <= h and x0 + cw <= w and ch > 0 and cw > 0
        areas.append(ch * cw / (h * w))
        ratios.append(cw / ch)
    areas, ratios = np.array(areas), np.array(ratios)
    # rounding the sides to whole pixels moves area and ratio a little past the bounds
    assert areas.min() > 0.13 and areas.max() <= 1.0
    assert ratios.min() > 0.73 and ratios.max() < 1.37
    assert areas.min() < 0.2 and areas.max() > 0.9  # the whole range is used
    assert np.mean(ratios > 1) == pytest.approx(0.5, abs=0.1)  # log-uniform ratio: symmetric


def test_crop_box_falls_back_to_a_central_crop_with_clamped_ratio():
    rng = np.random.default_rng(0)
    # an area above the image's can never fit: torchvision's fallback after 10 tries
    assert sample_resized_crop_box(100, 300, (2.0, 3.0), (3 / 4, 4 / 3), rng) == (0, 83, 100, 133)
    assert sample_resized_crop_box(300, 100, (2.0, 3.0), (3 / 4, 4 / 3), rng) == (83, 0, 133, 100)
    assert sample_resized_crop_box(90, 100, (2.0, 3.0), (3 / 4, 4 / 3), rng) == (0, 0, 90, 100)


def test_random_resized_crop_shape_content_and_reproducibility(img):
    out = random_resized_crop(img, 32, rng=np.random.default_rng(5))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, random_resized_crop(img, 32, rng=np.random.default_rng(5)))
    # the output is the resize of the sampled box
    box = sample_resized_crop_box(48, 64, (0.08, 1.0), (3 / 4, 4 / 3), np.random.default_rng(5))
    y0, x0, ch, cw = box
    ref = cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (32, 32), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out, crop_resize(img, box, 32)) and np.array_equal(out, ref)
    # positional rng, as in the torchvision-like signature
    assert np.array_equal(out, random_resized_crop(img, 32, (0.08, 1.0), (3 / 4, 4 / 3), np.random.default_rng(5)))
    with pytest.raises(TypeError, match="rng"):
        random_resized_crop(img, 32)


def test_strong_downscale_averages_instead_of_aliasing():
    """A 1-px checkerboard shrunk 8x is flat grey with area averaging; bilinear would alias."""
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    board = np.repeat(board[..., None], 3, axis=2)
    out = crop_resize(board, (0, 0, 256, 256), 32)
    assert np.abs(out.astype(int) - 128).max() <= 1


def test_crop_resize_points_track_image_content():
    image = np.zeros((80, 100, 3), np.float32)  # float: a smooth peak without uint8 plateaus
    image[30, 70] = 1.0  # a single bright pixel
    image = cv2.GaussianBlur(image, (0, 0), 2)
    box = (10, 40, 50, 50)  # y0, x0, h, w
    out = crop_resize(image, box, 150)  # 3x upscale
    (x, y) = crop_resize_points(np.array([[70.0, 30.0]]), box, 150)[0]
    peak = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    assert abs(peak[0] - y) <= 1 and abs(peak[1] - x) <= 1
    assert (x, y) == pytest.approx(((70 - 40 + 0.5) * 3 - 0.5, (30 - 10 + 0.5) * 3 - 0.5))


# --- colour --------------------------------------------------------------------------------------


def test_color_jitter_with_zero_strength_is_identity(img):
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert np.array_equal(color_jitter(img, 0, 0, 0, 0, rng), img)


def test_brightness_jitter_matches_hand_computation(img):
    out = color_jitter(img, 0.4, 0, 0, 0, np.random.default_rng(3))
    order, b, c, s, h = sample_color_jitter(0.4, 0, 0, 0, np.random.default_rng(3))
    assert sorted(order) == [0, 1, 2, 3] and (c, s, h) == (1.0, 1.0, 0.0) and 0.6 <= b <= 1.4 and b != 1.0
    assert np.array_equal(out, np.clip(np.rint(img.astype(np.float64) * b), 0, 255).astype(np.uint8))
    # factors are drawn uniformly in [max(0, 1 - v), 1 + v]
    rng = np.random.default_rng(0)
    fs = np.array([sample_color_jitter(0.4, 1.5, 0, 0, rng)[1:3] for _ in range(2000)])
    assert 0.6 <= fs[:, 0].min() < 0.62 and 1.38 < fs[:, 0].max() <= 1.4
    assert 0.0 <= fs[:, 1].min() < 0.05 and 2.45 < fs[:, 1].max() <= 2.5


def _reference(img: np.ndarray, b: float, c: float, s: float, h: float, order: tuple[int, ...]) -> np.ndarray:
    """torchvision's ``adjust_*`` maths on float images, written out independently (per-pixel
    ``colorsys`` for hue; float64; clamped after every op). Imports no torchvision, which costs
    seconds; the formulas were checked against ``torchvision.transforms.functional`` (max diff 1)."""
    x = img.astype(np.float64) / 255
    w = np.array([0.2989, 0.587, 0.114])
    for op in order:
        if op == 0:
            x = x * b
        elif op == 1:
            x = c * x + (1 - c) * (x @ w).mean()
        elif op == 2:
            x = s * x + (1 - s) * (x @ w)[..., None]
        else:
            flat = [colorsys.rgb_to_hsv(*p) for p in x.reshape(-1, 3)]
            x = np.array([colorsys.hsv_to_rgb((hh + h) % 1.0, ss, vv) for hh, ss, vv in flat]).reshape(x.shape)
        x = np.clip(x, 0, 1)
    return np.rint(x * 255).astype(int)


def test_adjust_color_matches_torchvision_formulas(img):
    small = img[::4, ::4]  # 12 x 16: the per-pixel colorsys reference stays fast
    cases = [
        (1.3, 1, 1, 0, (0, 1, 2, 3)),
        (1, 0.6, 1, 0, (0, 1, 2, 3)),
        (1, 1.7, 1, 0, (0, 1, 2, 3)),
        (1, 1, 1.8, 0, (0, 1, 2, 3)),
        (1, 1, 0.3, 0, (0, 1, 2, 3)),
        (1, 1, 1, 0.23, (0, 1, 2, 3)),
        (1, 1, 1, -0.41, (0, 1, 2, 3)),
        (1.4, 1.5, 0.5, 0.1, (1, 2, 0, 3)),  # a chain, clamped between ops
        (0.7, 1.5, 1.6, -0.2, (3, 0, 2, 1)),
    ]
    for b, c, s, h, order in cases:
        out = adjust_color(small, b, c, s, h, order).astype(int)
        assert np.abs(out - _reference(small, b, c, s, h, order)).max() <= 1, (b, c, s, h, order)
    # the order matters (clamping and the contrast mean depend on it)
    assert not np.array_equal(adjust_color(small, 1.6, 0.5, order=(0, 1, 2, 3)), adjust_color(small, 1.6, 0.5, order=(1, 0, 2, 3)))


def test_contrast_and_saturation_zero_collapse_to_grey(img):
    flat = adjust_color(img, contrast=0.0)
    assert np.ptp(flat) == 0 and abs(int(flat[0, 0, 0]) - _luma(img).mean()) <= 1
    assert np.abs(adjust_color(img, saturation=0.0).astype(int) - to_grayscale(img).astype(int)).max() <= 1


def test_hue_rotation_of_pure_colours():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert np.array_equal(adjust_color(red, hue=0.5)[0, 0], [0, 255, 255])  # cyan
    assert np.array_equal(adjust_color(red, hue=1 / 3)[0, 0], [0, 255, 0])  # green
    assert np.array_equal(adjust_color(red, hue=-1 / 3)[0, 0], [0, 0, 255])  # blue
    grey = np.full((4, 4, 3), 90, np.uint8)
    assert np.array_equal(adjust_color(grey, hue=0.37), grey)  # no hue to rotate


def test_grayscale_uses_itu_601_weights(img):
    g = to_grayscale(img)
    assert g.shape == img.shape and g.dtype == np.uint8
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
    assert np.abs(g[..., 0] - _luma(img)).max() <= 1


def test_blur_removes_high_frequencies(img):
    def hf(x):
        return np.abs(cv2.Laplacian(x.astype(np.float32), cv2.CV_32F)).mean()

    light, strong = gaussian_blur(img, 0.5), gaussian_blur(img, 2.0)
    assert hf(strong) < 0.5 * hf(light) < 0.5 * hf(img)
    assert abs(strong.astype(float).mean() - img.astype(float).mean()) < 1  # blur keeps the mean
    # kernel from sigma: +-3 sigma
    assert np.array_equal(gaussian_blur(img, 1.0), cv2.GaussianBlur(img, (7, 7), 1.0, borderType=cv2.BORDER_REFLECT_101))
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(img, 1.0, kernel_size=4)


def test_solarize_and_hflip(img):
    s = solarize(img, 128)
    hi = img >= 128
    assert np.array_equal(s[hi], 255 - img[hi]) and np.array_equal(s[~hi], img[~hi])
    f = hflip(img)
    assert np.array_equal(f[:, 0], img[:, -1]) and np.array_equal(hflip(f), img) and f.flags.c_contiguous


def test_color_augment_is_reproducible_and_uses_only_the_given_rng(img):
    aug = ColorAugment(solarize_p=0.2)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = [aug(img, np.random.default_rng(i)) for i in range(8)]
    b = [aug(img, np.random.default_rng(i)) for i in range(8)]
    assert np.array_equal(np.random.get_state()[1], state)  # global RNG untouched
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len({x.tobytes() for x in a}) == 8
    assert all(x.shape == img.shape and x.dtype == np.uint8 for x in a)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        aug.hue = 0.2  # type: ignore[misc]


def test_color_augment_probabilities(img):
    off = ColorAugment(jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0, flip_p=0)
    assert np.array_equal(off(img, np.random.default_rng(0)), img)
    flip_only = attrs.evolve(off, flip_p=1.0)
    assert np.array_equal(flip_only(img, np.random.default_rng(0)), hflip(img))
    grey = attrs.evolve(off, grayscale_p=1.0)(img, np.random.default_rng(0))
    assert np.array_equal(grey, to_grayscale(img))
    rng = np.random.default_rng(1)
    half = attrs.evolve(off, flip_p=0.5)
    flips = sum(np.array_equal(half(img, rng), hflip(img)) for _ in range(400))
    assert 160 < flips < 240
    jit = attrs.evolve(off, jitter_p=0.8)
    changed = sum(not np.array_equal(jit(img, rng), img) for _ in range(400))
    assert 280 < changed < 360


# --- decoding ------------------------------------------------------------------------------------


def _write(path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(buf.tobytes())


def test_decode_colour_png_is_rgb(tmp_path, img):
    p = tmp_path / "c.png"
    _write(p, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert np.array_equal(decode_image(p), img)
    assert np.array_equal(decode_image(p.read_bytes()), img)
    assert np.array_equal(decode_image(str(p)), img)


def test_decode_grey_and_alpha_png_to_three_channels(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    _write(tmp_path / "g.png", grey)
    out = decode_image(tmp_path / "g.png")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., k], grey) for k in range(3))
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[...] = (10, 20, 200, 7)  # B, G, R, alpha
    _write(tmp_path / "a.png", bgra)
    assert np.array_equal(decode_image(tmp_path / "a.png")[0, 0], [200, 20, 10])


def test_decode_truncated_or_corrupt_jpeg_names_the_file(tmp_path, img):
    p = tmp_path / "face.jpg"
    _write(p, img)
    full = p.read_bytes()
    assert decode_image(p).shape == img.shape
    for cut in (len(full) // 2, len(full) - 2, 300):
        p.write_bytes(full[:cut])
        with pytest.raises(DataError, match=r"face\.jpg.*truncated"):
            decode_image(p)
    p.write_bytes(full + b"trailing metadata")  # bytes after the end-of-image marker are fine
    assert decode_image(p).shape == img.shape
    p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"face\.jpg"):
        decode_image(p)
    p.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"face\.jpg.*corrupt"):
        decode_image(p)
    with pytest.raises(DataError, match=r"<image bytes>"):
        decode_image(full[:100])


def test_decode_missing_empty_and_truncated_png(tmp_path, img):
    with pytest.raises(DataError, match=r"nope\.png"):
        decode_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png.*empty"):
        decode_image(tmp_path / "empty.png")
    p = tmp_path / "cut.png"
    _write(p, img)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.png"):
        decode_image(p)
