"""View generation per sample: facerep's OpenCV/uint8 pipelines vs lightly's PIL/torchvision ones.

Each side does what one data-loader worker does for one sample, from a decoded image to the
tensors it hands to the collate function:

- facerep: ``np.random.default_rng([seed, 1, k])`` (the per-sample generator of
  ``facerep.engine.stream.ViewStream``), the view transform on the ``(H, W, 3)`` uint8 array, and
  each view as a CHW uint8 tensor. Conversion to float and normalisation happen later, batched,
  on the training device (``PretrainModel.prepare``).
- lightly: its transform on a PIL image, ending in ``ToTensor`` + ``Normalize`` (float32 CHW), as
  lightly's examples use it.

The random parameters follow the same distributions on both sides (torchvision's
``RandomResizedCrop`` / ``ColorJitter`` / ``RandomGrayscale`` draws), but from different random
streams, so outputs are compared through the deterministic ops: with fixed parameters, facerep's
colour ops against torchvision's functional ops on PIL (the ops lightly's pipeline calls).
"""

from __future__ import annotations

import numpy as np
import torch
from _timing import Result, paired, result
from PIL import Image, ImageFilter

from facerep.data.augment import adjust_color, gaussian_blur, to_grayscale
from facerep.data.synthetic import SyntheticFaces
from facerep.types import Sample
from facerep_frl.moco import AUG_PLUS_COLOR
from facerep_frl.swav import SwAVColor
from facerep_frl.views import MultiCropViews, TwoViews

__all__ = ["bench_multicrop", "bench_two_views", "colour_agreement"]

N_IMAGES = 16  # distinct faces cycled through


def _faces(size: int) -> list[Sample]:
    data = SyntheticFaces(n=N_IMAGES, size=size, n_identities=N_IMAGES, seed=0)
    return [data[i] for i in range(N_IMAGES)]


def _facerep_runner(transform, samples: list[Sample], per: int):
    state = {"k": 0}

    def run() -> None:
        for _ in range(per):
            k = state["k"]
            state["k"] += 1
            rng = np.random.default_rng([0, 1, k])
            views = transform(samples[k % len(samples)], rng)
            [torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for v in views]

    return run


def _lightly_runner(transform, images: list[Image.Image], per: int):
    state = {"k": 0}

    def run() -> None:
        for _ in range(per):
            k = state["k"]
            state["k"] += 1
            transform(images[k % len(images)])

    return run


def _check_shapes(ours: list[np.ndarray], theirs: list[torch.Tensor]) -> None:
    got = [v.shape[:2] for v in ours]
    want = [tuple(t.shape[1:]) for t in theirs]
    if got != want:
        raise AssertionError(f"view sizes differ: facerep {got}, lightly {want}")


def colour_agreement() -> str:
    """Mean |difference| (grey levels) of facerep's colour ops vs torchvision's functional ops on
    PIL, for fixed factors (no hue, whose PIL HSV round trip is itself lossy), grey and blur."""
    import torchvision.transforms.functional as TF

    img = SyntheticFaces(n=1, size=80, seed=0)[0].image
    pil = Image.fromarray(img)
    diffs = []
    for b, c, s in [(1.3, 0.7, 1.5), (0.5, 1.6, 0.3), (1.8, 0.4, 1.0)]:
        ours = adjust_color(img, b, c, s, 0.0, (0, 1, 2, 3))
        theirs = np.asarray(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(pil, b), c), s))
        diffs.append(np.abs(ours.astype(np.int16) - theirs).mean())
    jitter = float(np.mean(diffs))
    grey = float(np.abs(to_grayscale(img).astype(np.int16) - np.asarray(TF.rgb_to_grayscale(pil, 3))).mean())
    blur = float(np.mean([np.abs(gaussian_blur(img, s).astype(np.int16) - np.asarray(pil.filter(ImageFilter.GaussianBlur(s)))).mean()
                          for s in (0.5, 1.0, 2.0)]))
    if jitter > 2.0 or grey > 0.5 or blur > 2.0:
        raise AssertionError(f"colour ops disagree with torchvision: jitter {jitter:.2f}, grey {grey:.2f}, blur {blur:.2f} levels")
    return f"fixed-param mean abs diff (levels): jitter {jitter:.2f}, grey {grey:.2f}, blur {blur:.2f}"


def bench_multicrop(*, image_size: int, global_size: int, n_global: int, local_size: int, n_local: int, warmup: int, reps: int,
                    per: int, colour_check: str) -> Result:
    from lightly.transforms import SwaVTransform

    g_scale, l_scale = (0.14, 1.0), (0.05, 0.14)  # SwAV / Bulat et al.
    ours = MultiCropViews(n_global, global_size, g_scale, n_local, local_size, l_scale, SwAVColor())
    theirs = SwaVTransform(
        crop_sizes=(global_size, local_size), crop_counts=(n_global, n_local), crop_min_scales=(g_scale[0], l_scale[0]),
        crop_max_scales=(g_scale[1], l_scale[1]),
        # the rest are lightly's defaults, which are SwAV's: hflip 0.5, jitter 0.8/0.8/0.8/0.2 p 0.8, grey 0.2, blur p 0.5 sigma [0.1, 2]
    )
    samples = _faces(image_size)
    images = [Image.fromarray(s.image) for s in samples]
    _check_shapes(ours(samples[0], np.random.default_rng(0)), theirs(images[0]))
    times = paired(_facerep_runner(ours, samples, per), _lightly_runner(theirs, images, per), warmup=warmup, reps=reps, per=per)
    name = f"SwAV multi-crop {n_global}x{global_size}+{n_local}x{local_size} from {image_size}px"
    note = (f"{name}: facerep MultiCropViews (cv2, uint8 out) vs lightly SwaVTransform (PIL, float32 normalised out), "
            "SwAV colour (jitter .8/.8/.8/.2 p.8, grey .2, blur p.5, flip .5), one sample at a time")
    return result(name, "ms/sample", times, check=f"view sizes equal; {colour_check}", note=note)


def bench_two_views(*, image_size: int, size: int, warmup: int, reps: int, per: int, colour_check: str) -> Result:
    from lightly.transforms import MoCoV2Transform

    scale = (0.2, 1.0)  # MoCo-v2
    ours = TwoViews(size, scale, AUG_PLUS_COLOR)
    # lightly's other defaults are MoCo-v2's: jitter .4/.4/.4/.1 p.8, grey .2, blur p.5 sigma [.1, 2], flip .5
    theirs = MoCoV2Transform(input_size=size, min_scale=scale[0])
    samples = _faces(image_size)
    images = [Image.fromarray(s.image) for s in samples]
    _check_shapes(ours(samples[0], np.random.default_rng(0)), theirs(images[0]))
    times = paired(_facerep_runner(ours, samples, per), _lightly_runner(theirs, images, per), warmup=warmup, reps=reps, per=per)
    name = f"MoCo-v2 2x{size} from {image_size}px"
    note = (f"{name}: facerep TwoViews vs lightly MoCoV2Transform, aug-plus (crop scale 0.2-1, jitter .4/.4/.4/.1 p.8, grey .2, "
            "blur p.5, flip .5), one sample at a time")
    return result(name, "ms/sample", times, check=f"view sizes equal; {colour_check}", note=note)
