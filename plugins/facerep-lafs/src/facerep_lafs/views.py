"""LAFS's views (Sun et al., CVPR 2024; official ``lafs_train.py``, ``specs/methods.md`` §5.5): per
image, ``global_crops + local_crops`` geometric crops (RandomResizedCrop(``size``, ``scale``) + flip;
local views use the same crop range; their locality comes from using few landmarks), each
photometrically augmented as DINO's views (blur p 1.0 / 0.1 / 0.5, solarise on the second global).

Landmarks come from the *clean* crop and patches from the augmented one (the official order): the
sample's cached landmarks (``sample.landmarks``, from :mod:`facerep_lafs.landmarks`) are carried
through the crop and the flip, so the clean crop's landmarks are exact and no landmarker runs in the
loader. A flip re-orders the points by the scheme's mirror pairs (landmark ``k`` keeps its meaning
in image terms, as a landmarker run on the flipped crop would give). Then every coordinate gets
Gaussian noise ``N(0, sigma^2)`` (sigma 5 px at 112 px, scaled with ``size``), and each local view
keeps ``local_landmarks`` indices drawn uniformly *with replacement*, in the drawn order (196 -> 36
in the paper). The patches themselves are sampled in the objective, batched
(:func:`facerep_lafs.patches.landmark_patches`).

Returned: ``Views(images=[the augmented crops], extras={"global_points": (G, L, 2),
"local_points": (N, l, 2)})`` float32 pixel ``(x, y)``.
"""

from __future__ import annotations

import attrs
import numpy as np

from facerep.data.augment import ColorAugment, crop_resize, crop_resize_points, hflip, sample_resized_crop_box
from facerep.errors import DataError
from facerep.types import Sample, Views

__all__ = ["LandmarkViews"]


@attrs.frozen
class LandmarkViews:
    size: int
    scale: tuple[float, float]
    global_crops: int
    local_crops: int
    local_landmarks: int
    sigma: float
    flip_p: float
    flip_order: np.ndarray | None  # the permutation a mirror applies to the landmark indices; None: no flips
    colours: tuple[ColorAugment, ColorAugment, ColorAugment]  # first global, other globals, locals (their flip_p must be 0)
    n_landmarks: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Views:
        pts = sample.landmarks
        if pts is None or pts.shape != (self.n_landmarks, 2):
            got = "none" if pts is None else f"shape {tuple(pts.shape)}"
            raise DataError(f"{sample.meta.get('path', 'a sample')}: LAFS needs {self.n_landmarks} landmarks per image, got {got} "
                            f"(wrap the dataset in lafs.landmarked)")
        images, global_pts, local_pts = [], [], []
        sigma = self.sigma * self.size / 112.0
        h, w = sample.image.shape[:2]
        for v in range(self.global_crops + self.local_crops):
            box = sample_resized_crop_box(h, w, self.scale, (3 / 4, 4 / 3), rng)
            crop, p = crop_resize(sample.image, box, self.size), crop_resize_points(pts, box, self.size)
            if self.flip_order is not None and rng.random() < self.flip_p:
                crop = hflip(crop)
                p = p[self.flip_order] * np.array([-1.0, 1.0], np.float32) + np.array([self.size - 1, 0], np.float32)
            colour = self.colours[0] if v == 0 else self.colours[1] if v < self.global_crops else self.colours[2]
            images.append(colour(crop, rng))
            p = p + rng.normal(0.0, sigma, size=p.shape).astype(np.float32)
            if v < self.global_crops:
                global_pts.append(p)
            else:
                local_pts.append(p[rng.integers(0, self.n_landmarks, size=self.local_landmarks)])
        extras = {"global_points": np.stack(global_pts).astype(np.float32)}
        if local_pts:
            extras["local_points"] = np.stack(local_pts).astype(np.float32)
        return Views(images, extras)
