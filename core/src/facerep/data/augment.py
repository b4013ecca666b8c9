"""Image augmentation primitives on ``(H, W, 3)`` uint8 RGB arrays, with OpenCV.

They follow torchvision's semantics (``RandomResizedCrop``, ``ColorJitter``, ``Grayscale``,
``GaussianBlur``, ``RandomSolarize``) because the self-supervised recipes built on them (SimCLR,
MoCo-v2 "aug-plus", SwAV multi-crop) were specified with torchvision. Every random choice comes
from an explicit ``rng: np.random.Generator``, never from global state, so a view pipeline seeded
per sample is reproducible whatever the worker count.

These helpers are public API: plugins may rely on them (see docs/plugin-authoring.md, "What you may rely on").

Also here: :func:`decode_image` (a front for :func:`facerep.data.io.decode_image`, where image files are read).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import attrs
import cv2
import numpy as np

from facerep.data import io as _io

__all__ = [
    "ColorAugment",
    "adjust_color",
    "color_jitter",
    "crop_resize",
    "crop_resize_points",
    "decode_image",
    "dino_colour_augments",
    "gaussian_blur",
    "hflip",
    "random_resized_crop",
    "resized_view",
    "sample_color_jitter",
    "sample_resized_crop_box",
    "solarize",
    "to_grayscale",
]

#: Luma weights of torchvision's ``rgb_to_grayscale`` (ITU-R 601-2).
_GREY = np.array([0.2989, 0.587, 0.114], np.float32)

Box = tuple[int, int, int, int]  # (y0, x0, height, width)


# --- geometry ----------------------------------------------------------------------------------


def sample_resized_crop_box(h: int, w: int, scale: Sequence[float], ratio: Sequence[float], rng: np.random.Generator) -> Box:
    """A crop box as torchvision's ``RandomResizedCrop.get_params`` draws it.

    Up to 10 tries: area fraction ~ U(scale), log aspect ratio (w/h) ~ U(log ratio); the first box
    that fits is placed uniformly. Otherwise the largest central crop with the aspect ratio
    clamped into ``ratio``.

    Args:
        h, w: image height and width.
        scale: bounds of the crop area as a fraction of the image area.
        ratio: bounds of the crop aspect ratio (width / height).
        rng: source of randomness.

    Returns:
        ``(y0, x0, crop_h, crop_w)``.
    """
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            return y0, x0, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        ch, cw = h, round(h * max(ratio))
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def crop_resize(img: np.ndarray, box: Box, size: int | tuple[int, int]) -> np.ndarray:
    """Crop ``box = (y0, x0, h, w)`` and resize it to ``size`` (int: square, or ``(h, w)``).

    Bilinear, except area averaging when shrinking by more than 2x, where bilinear would alias.
    """
    y0, x0, ch, cw = box
    out_h, out_w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else size
    crop = img[y0 : y0 + ch, x0 : x0 + cw]
    if (ch, cw) == (out_h, out_w):
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if max(ch / out_h, cw / out_w) > 2.0 else cv2.INTER_LINEAR
    return cv2.resize(crop, (out_w, out_h), interpolation=interp)


def crop_resize_points(points: np.ndarray, box: Box, size: int | tuple[int, int]) -> np.ndarray:
    """Map ``(K, 2)`` pixel ``(x, y)`` points into the output of :func:`crop_resize`.

    Uses cv2.resize's pixel-centre convention: ``x_out = (x_in - x0 + 0.5) * sx - 0.5``.
    """
    y0, x0, ch, cw = box
    out_h, out_w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else size
    s = np.array([out_w / cw, out_h / ch], np.float32)
    return ((np.asarray(points, np.float32) - np.array([x0, y0], np.float32) + 0.5) * s - 0.5).astype(np.float32)


def random_resized_crop(
    img: np.ndarray,
    size: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """torchvision's ``RandomResizedCrop``: a box from :func:`sample_resized_crop_box`, resized to
    ``size x size``. ``rng`` is required (it defaults to None only so that it can follow the
    optional bounds); global random state is never used."""
    if rng is None:
        raise TypeError("random_resized_crop needs an explicit rng")
    box = sample_resized_crop_box(img.shape[0], img.shape[1], scale, ratio, rng)
    return crop_resize(img, box, size)


def resized_view(img: np.ndarray, size: int, scale: Sequence[float], rng: np.random.Generator,
                 ratio: Sequence[float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """The whole image resized to ``size x size`` when ``scale`` is ``(1, 1)`` (MAE/MCF's plain
    resize, no randomness drawn), else :func:`random_resized_crop` with ``scale``."""
    if tuple(scale) == (1.0, 1.0):
        return crop_resize(img, (0, 0, img.shape[0], img.shape[1]), size)
    return random_resized_crop(img, size, scale, ratio, rng)


def hflip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right (a contiguous copy)."""
    return np.ascontiguousarray(img[:, ::-1])


# --- colour --------------------------------------------------------------------------------------


def _grey(x: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` float32 luma of a float32 RGB image."""
    return (x @ _GREY)[..., None]


def _hue_shift(x: np.ndarray, hue: float) -> np.ndarray:
    """Rotate hue by ``hue`` turns, float32 in [0, 255] -> float32 in [0, 255]."""
    # OpenCV's float HSV keeps full precision (H in degrees); 8-bit HSV would quantise H to 2 deg.
    hsv = cv2.cvtColor(x * np.float32(1 / 255), cv2.COLOR_RGB2HSV)
    h = hsv[..., 0] + np.float32(hue * 360.0)
    h %= 360.0
    h[h >= 360.0] = 0.0  # float rounding of small negatives
    hsv[..., 0] = h
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255)


def adjust_color(
    img: np.ndarray,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    order: Sequence[int] = (0, 1, 2, 3),
) -> np.ndarray:
    """Apply fixed colour factors, in ``order`` (0 brightness, 1 contrast, 2 saturation, 3 hue).

    Same maths as torchvision's ``adjust_*`` on float images: brightness scales; contrast blends
    with the mean luma of the whole image; saturation blends with the per-pixel luma; hue rotates
    in HSV by ``hue`` turns. Like torchvision, values are clamped to the valid range after every
    op; unlike chaining uint8 ops, rounding happens once, at the end. Neutral factors are skipped.
    """
    x = img.astype(np.float32)
    for op in order:
        if op == 0 and brightness != 1.0:
            x *= np.float32(brightness)
        elif op == 1 and contrast != 1.0:
            mean = np.float32(_grey(x).mean())
            x = x * np.float32(contrast) + mean * np.float32(1.0 - contrast)
        elif op == 2 and saturation != 1.0:
            x = x * np.float32(saturation) + _grey(x) * np.float32(1.0 - saturation)
        elif op == 3 and hue != 0.0:
            x = _hue_shift(x, hue)
        else:
            continue
        np.clip(x, 0.0, 255.0, out=x)
    return np.rint(x).astype(np.uint8)


def sample_color_jitter(
    brightness: float, contrast: float, saturation: float, hue: float, rng: np.random.Generator
) -> tuple[tuple[int, ...], float, float, float, float]:
    """torchvision's ``ColorJitter.get_params``: a random op order, then the factors.

    Brightness/contrast/saturation factors ~ U(max(0, 1 - v), 1 + v), hue ~ U(-h, h) (turns); a
    strength of 0 draws nothing and gives the neutral factor.

    Returns:
        ``(order, brightness_factor, contrast_factor, saturation_factor, hue_shift)``.
    """
    order = tuple(int(i) for i in rng.permutation(4))
    b = rng.uniform(max(0.0, 1 - brightness), 1 + brightness) if brightness > 0 else 1.0
    c = rng.uniform(max(0.0, 1 - contrast), 1 + contrast) if contrast > 0 else 1.0
    s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation) if saturation > 0 else 1.0
    h = rng.uniform(-hue, hue) if hue > 0 else 0.0
    return order, float(b), float(c), float(s), float(h)


def color_jitter(
    img: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float, rng: np.random.Generator
) -> np.ndarray:
    """torchvision's ``ColorJitter(brightness, contrast, saturation, hue)`` on a uint8 RGB image."""
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5] (a fraction of a turn), got {hue}")
    order, b, c, s, h = sample_color_jitter(brightness, contrast, saturation, hue, rng)
    return adjust_color(img, b, c, s, h, order)


def to_grayscale(img: np.ndarray) -> np.ndarray:
    """Luma with torchvision's ITU-R 601-2 weights, repeated on 3 channels (uint8)."""
    grey = np.rint(img.astype(np.float32) @ _GREY).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def gaussian_blur(img: np.ndarray, sigma: float, kernel_size: int | None = None) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` (pixels).

    Without ``kernel_size`` the kernel spans +-3 sigma (odd, at least 3), which holds >99% of the
    weight; the border is reflected (``BORDER_REFLECT_101``, torchvision's ``reflect`` padding).
    """
    if kernel_size is None:
        kernel_size = max(3, 2 * math.ceil(3.0 * sigma) + 1)
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    return cv2.GaussianBlur(img, (kernel_size, kernel_size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def solarize(img: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Invert every value ``>= threshold`` (torchvision's ``solarize``)."""
    return np.where(img >= threshold, 255 - img, img).astype(np.uint8)


@attrs.frozen
class ColorAugment:
    """The photometric part of a SimCLR / MoCo-v2 "aug-plus" view, plus the horizontal flip.

    Applied in order, each with its own probability: colour jitter, grayscale, Gaussian blur
    (sigma ~ U(blur_sigma)), solarize, horizontal flip. The flip commutes with the others (all are
    per-pixel or mirror-symmetric), so its place in the chain does not matter.

    The defaults are MoCo-v2's (Chen et al. 2020, after SimCLR): jitter (0.4, 0.4, 0.4, 0.1) with
    p=0.8, grayscale p=0.2, blur p=0.5 with sigma in [0.1, 2]. SwAV's colour distortion of strength
    s=1 (used by Bulat et al., ECCV 2022, "Pre-training strategies and datasets for facial
    representation learning") is jitter brightness=contrast=saturation=0.8, hue=0.2 with p=0.8,
    grayscale p=0.2; blur p=0.5 with sigma in [0.1, 2]. BYOL-style recipes add solarize_p > 0.
    """

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    flip_p: float = 0.5

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # One uniform per stage whether or not it fires, so the stream of draws for later stages
        # does not depend on which earlier ones fired (only on their parameters).
        if rng.random() < self.jitter_p:
            img = color_jitter(img, self.brightness, self.contrast, self.saturation, self.hue, rng)
        if rng.random() < self.grayscale_p:
            img = to_grayscale(img)
        if rng.random() < self.blur_p:
            img = gaussian_blur(img, float(rng.uniform(self.blur_sigma[0], self.blur_sigma[1])))
        if rng.random() < self.solarize_p:
            img = solarize(img)
        if rng.random() < self.flip_p:
            img = hflip(img)
        return img


def dino_colour_augments(*, jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1), jitter_p: float = 0.8,
                         grayscale_p: float = 0.2, flip_p: float = 0.5, solarize_p: float = 0.2,
                         blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5),
                         blur_sigma: tuple[float, float] = (0.1, 2.0)) -> tuple[ColorAugment, ColorAugment, ColorAugment]:
    """DINO's asymmetric photometric chains (Caron et al. 2021, after BYOL), ``(first global, second
    global, local)``: the same jitter, grey and flip on all; Gaussian blur with p 1.0 / 0.1 / 0.5;
    solarisation only on the second global."""
    common = dict(jitter_p=jitter_p, brightness=jitter[0], contrast=jitter[1], saturation=jitter[2], hue=jitter[3],
                  grayscale_p=grayscale_p, flip_p=flip_p, blur_sigma=tuple(blur_sigma))
    return (ColorAugment(**common, blur_p=blur_p[0]), ColorAugment(**common, blur_p=blur_p[1], solarize_p=solarize_p),
            ColorAugment(**common, blur_p=blur_p[2]))


# --- decoding ------------------------------------------------------------------------------------


def decode_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None) -> np.ndarray:
    """Read an image file (or its encoded bytes) into an ``(H, W, 3)`` uint8 RGB array.

    Grey images are repeated on 3 channels, an alpha channel is dropped (like PIL's
    ``convert("RGB")``), 16-bit images are scaled to 8 bits and JPEG EXIF orientation is applied
    (all by ``cv2.IMREAD_COLOR``), then BGR is turned into RGB. The work is done by
    :func:`facerep.data.io.decode_image`.

    Args:
        source: a path, or the encoded bytes.
        name: what to call ``source`` in error messages when it is bytes.

    Raises:
        DataError: naming the file, when it is missing, unreadable, empty, truncated, corrupt or
            its header claims an absurd size (:data:`facerep.data.io.MAX_IMAGE_PIXELS`).
    """
    return _io.decode_image(source, path=name)
