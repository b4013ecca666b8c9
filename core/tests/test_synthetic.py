"""The synthetic face generator: determinism, label/pixel agreement, identity stability."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from facerep.data.synthetic import (
    ATTRIBUTES,
    EXPRESSIONS,
    IBUG68_FLIP_PAIRS,
    MASK_CLASSES,
    SyntheticFaces,
    SyntheticParams,
    build_synthetic,
)
from facerep.protocols import FaceDataset

M = {name: i for i, name in enumerate(MASK_CLASSES)}
A = {name: i for i, name in enumerate(ATTRIBUTES)}


@pytest.fixture(scope="module")
def faces() -> SyntheticFaces:
    return SyntheticFaces(n=96, size=64, n_identities=8, seed=0)


@pytest.fixture(scope="module")
def samples(faces):
    return [faces[i] for i in range(len(faces))]


def _near(mask: np.ndarray, pt: np.ndarray, r: int = 1) -> set[int]:
    """Mask classes in the (2r+1)^2 neighbourhood of the pixel containing ``pt``."""
    x, y = (int(v) for v in np.rint(pt))
    return set(np.unique(mask[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]).tolist())


def _luma(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def test_info_and_labels(faces, samples):
    info = faces.info
    assert info.name == "synthetic_faces" and info.synthetic and info.split == "train"
    assert info.labels == ("identity", "landmarks", "mask", "attributes", "expression", "caption")
    assert info.class_names["expression"] == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert len(info.class_names["mask"]) == 19 and info.class_names["attributes"] == ATTRIBUTES
    assert info.landmark_scheme == "68" and isinstance(faces, FaceDataset)
    s = samples[5]
    assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
    assert s.landmarks.shape == (68, 2) and s.landmarks.dtype == np.float32
    assert s.mask.shape == (64, 64) and s.mask.dtype == np.uint8 and s.mask.max() < 19
    assert s.attributes.shape == (5,) and s.attributes.dtype == np.uint8
    assert s.identity == 5 % 8 and 0 <= s.expression < 7
    assert s.caption.startswith(f"a drawing of a{'n' if info.class_names['expression'][s.expression][0] in 'aeiou' else ''} "
                                f"{info.class_names['expression'][s.expression]} face")
    assert ("eyeglasses" in s.caption) == bool(s.attributes[1])
    assert s.meta == {"path": "synthetic://train/5", "synthetic": True}
    assert {x.expression for x in samples} == set(range(7))


def test_indexing():
    ds = SyntheticFaces(n=5, size=32)
    assert len(ds) == 5
    assert np.array_equal(ds[-1].image, ds[4].image) and ds[-1].meta["path"] == "synthetic://train/4"
    assert np.array_equal(ds[np.int64(2)].image, ds[2].image)
    for bad in (5, -6):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(ValueError, match="size"):
        SyntheticFaces(size=8)


def test_build_from_params_matches_constructor():
    ds = build_synthetic(SyntheticParams(n=7, size=32, n_identities=3, seed=4, split="val"))
    ref = SyntheticFaces(n=7, size=32, n_identities=3, seed=4, split="val")
    assert len(ds) == 7 and ds.info == ref.info
    assert np.array_equal(ds[6].image, ref[6].image)


def test_deterministic_across_calls_and_instances():
    a, b = SyntheticFaces(n=8, seed=3), SyntheticFaces(n=8, seed=3)
    for i in (0, 7):
        x, y, z = a[i], a[i], b[i]
        assert x.image.tobytes() == y.image.tobytes() == z.image.tobytes()
        assert np.array_equal(x.mask, z.mask) and np.array_equal(x.landmarks, z.landmarks)
        assert np.array_equal(x.attributes, z.attributes) and x.expression == z.expression


def test_deterministic_across_processes():
    """Another interpreter (with a different string-hash seed) draws byte-identical images."""
    code = (
        "import hashlib; from facerep.data.synthetic import SyntheticFaces as S; "
        "d = S(n=4, size=32, split='test'); print(hashlib.sha256(b''.join(d[i].image.tobytes() for i in range(4))).hexdigest())"
    )
    src = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["facerep"].__file__)))
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    d = SyntheticFaces(n=4, size=32, split="test")
    assert out == hashlib.sha256(b"".join(d[i].image.tobytes() for i in range(4))).hexdigest()


def test_seeds_and_splits_draw_different_samples_of_the_same_people():
    base = SyntheticFaces(n=4, seed=0)
    other_seed, test = SyntheticFaces(n=4, seed=1), SyntheticFaces(n=4, seed=0, split="test")
    for i in range(4):
        assert not np.array_equal(base[i].image, other_seed[i].image)
        assert not np.array_equal(base[i].image, test[i].image)
    assert base.traits(2) == test.traits(2)  # identities are shared by the splits
    assert base.traits(2) != other_seed.traits(2)


def test_flip_pairs_are_an_involution_with_the_ibug_midline_fixed():
    perm = np.arange(68)
    for a, b in IBUG68_FLIP_PAIRS:
        assert perm[a] == a and perm[b] == b, "an index appears in two pairs"
        perm[a], perm[b] = b, a
    assert np.array_equal(perm[perm], np.arange(68))
    assert np.flatnonzero(perm == np.arange(68)).tolist() == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def test_flip_pairs_are_mirror_images_in_the_drawn_geometry(samples):
    """Each pair's midpoint and every fixed point lie on the face's vertical midline, and the
    pairs straddle it: the flip pairs match the geometry, whatever the pose."""
    pairs = np.array(IBUG68_FLIP_PAIRS)
    fixed = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
    for s in samples[:24]:
        lm = s.landmarks.astype(np.float64)
        axis = lm[45] - lm[36]
        axis /= np.linalg.norm(axis)
        side = lambda p, lm=lm, axis=axis: (p - lm[27]) @ axis  # signed distance from the midline
        assert np.abs(side((lm[pairs[:, 0]] + lm[pairs[:, 1]]) / 2)).max() < 0.02
        assert np.abs(side(lm[fixed])).max() < 0.02
        assert np.all(side(lm[pairs[:, 0]]) * side(lm[pairs[:, 1]]) < 0)


def test_landmarks_follow_the_ibug_layout(samples):
    for s in samples[:24]:
        lm = s.landmarks
        assert np.all((lm >= 0) & (lm <= s.image.shape[0] - 1))
        axis = lm[45] - lm[36]
        up = np.array([axis[1], -axis[0]])  # face "up" (image y points down)
        height = lambda i, lm=lm, up=up: lm[i] @ up
        # brows above eyes above nose tip above mouth above chin
        assert height([17, 21, 22, 26]).min() > height([37, 38, 43, 44]).max()
        assert height([36, 39, 42, 45]).min() > height(30)
        assert height(30) > height(51) > height(57) > height(8)
        assert lm[36] @ axis < lm[39] @ axis < lm[42] @ axis < lm[45] @ axis


def test_landmarks_lie_on_the_drawn_parts(samples):
    parts = [
        (range(0, 17), {M["skin"]}),
        (range(17, 22), {M["r_brow"]}),
        (range(22, 27), {M["l_brow"]}),
        (range(27, 36), {M["nose"]}),
        (range(36, 42), {M["r_eye"]}),
        (range(42, 48), {M["l_eye"]}),
        (range(48, 68), {M["mouth"], M["u_lip"], M["l_lip"]}),
    ]
    for s in samples:
        for idx, classes in parts:
            for k in idx:
                assert _near(s.mask, s.landmarks[k]) & classes, f"{s.meta['path']}: landmark {k} not on {classes}"


def test_eye_landmarks_sit_on_eye_pixels(samples):
    """Eye-contour landmarks are on lid-line or sclera pixels (far from skin colour), and the
    centre of the six points is on the dark iris."""
    for s in samples:
        img = s.image.astype(np.float32)
        skin = np.median(img[s.mask == M["skin"]], axis=0)
        for first in (36, 42):
            pts = np.rint(s.landmarks[first : first + 6]).astype(int)
            assert np.linalg.norm(img[pts[:, 1], pts[:, 0]] - skin, axis=1).mean() > 30, s.meta["path"]
            cx, cy = np.rint(s.landmarks[first : first + 6].mean(0)).astype(int)
            assert _luma(s.image)[cy, cx] < 0.6 * (skin @ np.array([0.299, 0.587, 0.114])), s.meta["path"]


def test_mask_regions_follow_landmarks_at_high_resolution():
    """At 192 px, the eye and mouth mask regions are centred on their landmark polygons."""
    ds = SyntheticFaces(n=6, size=192, n_identities=6, seed=2)
    for i in range(6):
        s = ds[i]
        for cls, idx in ((M["r_eye"], range(36, 42)), (M["l_eye"], range(42, 48)), (M["nose"], [27, 31, 33, 35])):
            ys, xs = np.nonzero(s.mask == cls)
            pts = s.landmarks[list(idx)]
            assert pts[:, 0].min() - 1 <= xs.mean() <= pts[:, 0].max() + 1
            assert pts[:, 1].min() - 1 <= ys.mean() <= pts[:, 1].max() + 1
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()  # landmarks within the region's box
            assert np.all((pts[:, 0] > x0 - 2) & (pts[:, 0] < x1 + 2) & (pts[:, 1] > y0 - 2) & (pts[:, 1] < y1 + 2))


def test_geometry_is_resolution_independent():
    """Same draws at 32 and 128 px: landmarks scale by 4 about the pixel-centre convention."""
    small, big = SyntheticFaces(n=3, size=32)[2], SyntheticFaces(n=3, size=128)[2]
    np.testing.assert_allclose(big.landmarks + 0.5, 4 * (small.landmarks + 0.5), atol=1e-3)
    assert small.expression == big.expression and np.array_equal(small.attributes, big.attributes)


def test_pose_varies_and_landmarks_rotate_with_it(samples):
    angles = []
    for s in samples:
        d = s.landmarks[45] - s.landmarks[36]
        angles.append(np.degrees(np.arctan2(d[1], d[0])))
        # the eye masks' centroids rotate with the landmarks: the line between them is parallel
        c = [np.argwhere(s.mask == k).mean(0)[::-1] for k in (M["r_eye"], M["l_eye"])]
        e = c[1] - c[0]
        assert abs(np.degrees(np.arctan2(e[1], e[0])) - angles[-1]) < 6
    assert np.ptp(angles) > 15


def test_mask_classes_agree_with_image_and_attributes(faces, samples):
    for s in samples:
        present = set(np.unique(s.mask).tolist())
        assert {M[k] for k in ("background", "skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip", "hair")} <= present
        assert (M["eye_g"] in present) == bool(s.attributes[A["eyeglasses"]])
        assert (M["mouth"] in present) == bool(s.attributes[A["mouth_open"]])
        assert bool(s.attributes[A["smiling"]]) == (EXPRESSIONS[s.expression] == "happy")
        # skin pixels have the identity's skin colour up to a global lighting gain
        skin = np.median(s.image[s.mask == M["skin"]].astype(np.float32), axis=0)
        ratio = (skin / np.asarray(faces.traits(s.identity).skin, np.float32))[skin < 250]  # unclipped channels
        assert 0.6 < ratio.mean() < 1.4 and np.ptp(ratio) < 0.12, (s.meta["path"], ratio)
        # eye regions are darker than skin; inner mouth darker than lips
        assert _luma(s.image)[np.isin(s.mask, [M["l_eye"], M["r_eye"]])].mean() < _luma(s.image)[s.mask == M["skin"]].mean()


def test_identity_traits_are_stable_and_distinct(faces, samples):
    # inner/outer eye-corner distance ratio: set by the identity, invariant to pose and expression
    ratio = {}
    chroma = {}
    for s in samples:
        lm = s.landmarks
        r = np.linalg.norm(lm[42] - lm[39]) / np.linalg.norm(lm[45] - lm[36])
        ratio.setdefault(s.identity, []).append(r)
        rgb = np.median(s.image[s.mask == M["skin"]].astype(np.float32), axis=0)
        chroma.setdefault(s.identity, []).append(rgb / rgb.sum())
    spreads = [np.ptp(v) for v in ratio.values()]
    means = [np.mean(v) for v in ratio.values()]
    assert max(spreads) < 0.01 and np.ptp(means) > 0.05
    within = np.mean([np.linalg.norm(np.array(v) - np.mean(v, 0), axis=1).mean() for v in chroma.values()])
    centres = np.array([np.mean(v, 0) for v in chroma.values()])
    between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :]])
    assert between > 3 * within
    # attribute bits that belong to the person are constant per identity
    for k in ("eyeglasses", "dark_hair", "male_like"):
        per_id = {}
        for s in samples:
            per_id.setdefault(s.identity, set()).add(int(s.attributes[A[k]]))
        assert all(len(v) == 1 for v in per_id.values()), k
    assert faces.traits(3) is faces.traits(3) and faces.traits(3) != faces.traits(4)


def test_mouth_shape_depends_on_expression(samples):
    """Smiles lift the mouth corners, sadness drops them, surprise opens a tall narrow mouth."""

    def corner_lift(s):
        lm = s.landmarks
        axis = (lm[45] - lm[36]) / np.linalg.norm(lm[45] - lm[36])
        up = np.array([axis[1], -axis[0]])
        centre = (lm[62] + lm[66]) / 2
        return float(((lm[48] + lm[54]) / 2 - centre) @ up) / np.linalg.norm(lm[45] - lm[36])

    def aspect(s):
        lm = s.landmarks
        return float(np.linalg.norm(lm[57] - lm[51]) / np.linalg.norm(lm[54] - lm[48]))

    by = {name: [s for s in samples if EXPRESSIONS[s.expression] == name] for name in EXPRESSIONS}
    assert min(corner_lift(s) for s in by["happy"]) > 0.03
    assert max(corner_lift(s) for s in by["sad"]) < -0.03
    assert min(aspect(s) for s in by["surprise"]) > 1.5 * max(aspect(s) for s in by["neutral"])


def test_many_samples_are_all_distinct():
    """Throughput sanity (no timing assert): 256 samples at 64 px, every image different."""
    ds = SyntheticFaces(n=256, size=64, n_identities=16)
    hashes = {hashlib.sha1(ds[i].image.tobytes()).hexdigest() for i in range(len(ds))}
    assert len(hashes) == 256
