"""SYNTHETIC faces drawn with OpenCV: a seeded stand-in for face datasets in smoke tests, unit tests
and the quickstart.

This is NOT a substitute for real data. The faces are cartoons made of filled polygons; a model
that does well on them has learnt nothing about real faces, and no number measured on them may be
reported as a result (``DatasetInfo.synthetic`` is True so that reports can say so).

What it is good for: every label type the framework handles (identity, 68 landmarks, a
CelebAMask-HQ-style parsing mask, binary attributes, expression) exists on every sample and is
consistent with the pixels, so pipelines and probes can be exercised end to end without data.

How one face is made:

1. Identity traits (skin tone, face shape, eye spacing, hair, glasses, ...) come from
   ``np.random.default_rng([seed, identity])``, so a person looks the same in every sample and
   every split.
2. Per-sample choices (expression, pose, colours, lighting, noise) come from
   ``np.random.default_rng([seed, split_code, index])``; ``split_code`` is a CRC32 of the split
   name, stable across processes (Python's ``hash`` of a string is not).
3. Geometry first: every part is a polygon in a canonical face frame (units of the image size,
   origin at the face centre, y down) and the 68 landmarks are points on those same curves.
4. One similarity transform (the pose) maps all points to pixels at once; the image and the mask
   are then filled from the same transformed polygons, so landmarks, mask and pixels agree.
"""

from __future__ import annotations

import functools
import math
import operator
import zlib
from typing import NamedTuple

import attrs
import cv2
import numpy as np

from facerep.types import DatasetInfo, Sample

__all__ = [
    "ATTRIBUTES",
    "EXPRESSIONS",
    "IBUG68_FLIP_PAIRS",
    "MASK_CLASSES",
    "MASK_FLIP_PAIRS",
    "FaceTraits",
    "SyntheticFaces",
    "SyntheticParams",
    "build_synthetic",
    "make_traits",
    "synthetic_caption",
]

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
ATTRIBUTES = ("smiling", "eyeglasses", "dark_hair", "male_like", "mouth_open")

#: CelebAMask-HQ class order. ``l_*``/``r_*`` are the subject's left/right (``l_eye`` is on the
#: image's right), the same convention as iBUG's "left eye" points 42-47.
MASK_CLASSES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
#: Mask classes swapped by a horizontal flip.
MASK_FLIP_PAIRS = ((4, 5), (6, 7), (8, 9))

#: iBUG 68-point horizontal flip pairs (0-based); the 10 points on the midline map to themselves.
IBUG68_FLIP_PAIRS = (
    (0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),  # jaw
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),  # brows
    (31, 35), (32, 34),  # nostrils
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67),  # mouth
)  # fmt: skip

_SKIN_ANCHORS = np.array([(250, 222, 198), (226, 176, 142), (180, 122, 86), (108, 70, 46)], np.float32)
_HAIR = np.array([(28, 24, 22), (62, 42, 30), (112, 78, 50), (206, 172, 110), (140, 64, 36), (168, 166, 160)], np.float32)
_HAIR_P = (0.3, 0.25, 0.15, 0.15, 0.08, 0.07)
_DARK_HAIR = (0, 1)  # indices into _HAIR counted as "dark_hair"
_IRIS = np.array([(60, 38, 24), (102, 66, 38), (70, 110, 160), (80, 120, 70)], np.float32)
_FRAMES = np.array([(20, 20, 20), (70, 45, 30), (150, 150, 155), (150, 30, 40)], np.float32)
_SCLERA = (240.0, 238.0, 232.0)
_LID = (25.0, 18.0, 18.0)
_MOUTH_INSIDE = (70.0, 20.0, 25.0)
_TEETH = (235.0, 230.0, 215.0)


@attrs.frozen
class SyntheticParams:
    """Config of the ``core.synthetic`` dataset (see :class:`SyntheticFaces`)."""

    n: int = 256
    size: int = 64
    n_identities: int = 16
    seed: int = 0
    split: str = "train"


@attrs.frozen
class FaceTraits:
    """What stays fixed for one synthetic identity. Lengths are in units of the image size.

    Attributes:
        face_w, face_h: half width and half height of the face outline.
        jaw_power: superellipse exponent of the lower face (2 = round, larger = squarer jaw).
        eye_dx: half the distance between the eye centres; eye_y: their height.
        eye_w, eye_h: eye half width and upper-lid height (the lower lid is 0.6 of it).
        brow_gap, brow_thick: brow height above the eyes and brow thickness.
        nose_y, nose_w: nose-tip height and half width at the nostrils.
        mouth_y, mouth_w: mouth height and half width; lip_upper/lip_lower: lip thicknesses.
        hairline: height of the hairline at the midline.
        skin, lips, hair, iris, frames: RGB colours.
    """

    face_w: float
    face_h: float
    jaw_power: float
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float
    brow_thick: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_upper: float
    lip_lower: float
    hairline: float
    skin: tuple[float, float, float]
    lips: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    frames: tuple[float, float, float]
    dark_hair: bool
    male_like: bool
    long_hair: bool
    eyeglasses: bool


class _Expr(NamedTuple):
    """Expression-dependent geometry; offsets are in units of the face half height."""

    brow_raise: float  # whole brow up
    brow_inner: float  # inner brow end down (anger) or up (sadness, fear) when negative
    eye_open: float  # lid opening multiplier
    mouth_width: float  # mouth width multiplier
    corner: float  # mouth corners up (smile) or down (sadness) when negative
    opening: float  # gap between the inner lips
    asym: float  # one corner up, the other down (the sneer of disgust)


def synthetic_caption(expression: int, attributes: np.ndarray) -> str:
    """What the labels say, as text (for image-text objectives): "a drawing of a happy face with
    eyeglasses and dark hair"."""
    extras = [word for word, on in zip(("eyeglasses", "dark hair", "an open mouth"), attributes[[1, 2, 4]], strict=True) if on]
    text = f"a drawing of {'an' if EXPRESSIONS[expression][0] in 'aeiou' else 'a'} {EXPRESSIONS[expression]} face"
    return text + (" with " + " and ".join(extras) if extras else "")


# Prototypes per class of EXPRESSIONS, loosely after FACS descriptions of the basic emotions:
# lowered, drawn-together brows for anger; raised brows, wide eyes and an open "O" for surprise...
_EXPR = (
    _Expr(-0.03, 0.05, 0.75, 0.88, -0.03, 0.0, 0.0),  # angry
    _Expr(-0.02, 0.03, 0.65, 0.85, -0.02, 0.0, 0.06),  # disgust
    _Expr(0.06, -0.04, 1.30, 1.12, -0.04, 0.14, 0.0),  # fear
    _Expr(0.01, 0.0, 0.80, 1.15, 0.12, 0.0, 0.0),  # happy (opening drawn per sample)
    _Expr(0.01, -0.07, 0.85, 0.95, -0.10, 0.0, 0.0),  # sad
    _Expr(0.08, -0.01, 1.35, 0.62, 0.0, 0.24, 0.0),  # surprise
    _Expr(0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0),  # neutral
)
_HAPPY = EXPRESSIONS.index("happy")
_OPEN_THRESHOLD = 0.05  # "mouth_open" when the inner-lip gap exceeds this (all open mouths are >= 0.1)


class _Op(NamedTuple):
    """One paint operation: a polygon filled (``line == 0``) or stroked (``line`` px thick)."""

    key: str
    colour: tuple[float, float, float] | None  # None: mask only
    cls: int | None  # None: image only
    line: int = 0
    closed: bool = True


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def _rgb(c: np.ndarray) -> tuple[float, float, float]:
    c = np.clip(c, 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def make_traits(seed: int, identity: int) -> FaceTraits:
    """The stable traits of one identity, drawn from ``default_rng([seed, identity])``."""
    rng = np.random.default_rng([seed, identity])
    u = rng.uniform
    male = bool(rng.random() < 0.5)
    fw = u(0.24, 0.30)
    fh = min(fw * u(1.22, 1.36), 0.38)
    eye_w = fw * u(0.16, 0.20)
    eye_y = -fh * u(0.06, 0.16)
    nose_y = eye_y + fh * u(0.38, 0.44)
    tone = u(0.0, 1.0) * (len(_SKIN_ANCHORS) - 1)
    k = min(int(tone), len(_SKIN_ANCHORS) - 2)
    skin = _SKIN_ANCHORS[k] + (tone - k) * (_SKIN_ANCHORS[k + 1] - _SKIN_ANCHORS[k]) + rng.normal(0, 5, 3)
    hair_idx = int(rng.choice(len(_HAIR), p=_HAIR_P))
    return FaceTraits(
        face_w=fw,
        face_h=fh,
        jaw_power=u(2.7, 3.5) if male else u(2.0, 2.5),
        eye_dx=fw * u(0.36, 0.46),
        eye_y=eye_y,
        eye_w=eye_w,
        eye_h=eye_w * u(0.45, 0.6),
        brow_gap=fh * u(0.17, 0.21),
        brow_thick=fh * (u(0.045, 0.06) if male else u(0.03, 0.045)),
        nose_y=nose_y,
        nose_w=fw * u(0.17, 0.23),
        mouth_y=nose_y + fh * u(0.22, 0.27),
        mouth_w=fw * u(0.30, 0.38),
        lip_upper=fh * u(0.05, 0.08),
        lip_lower=fh * u(0.07, 0.10),
        hairline=eye_y - fh * (u(0.46, 0.56) if male else u(0.42, 0.48)),
        skin=_rgb(skin),
        lips=_rgb(skin * np.array([0.85, 0.58, 0.60], np.float32) + np.array([25, 0, 5], np.float32)),
        hair=_rgb(_HAIR[hair_idx] + rng.normal(0, 6, 3)),
        iris=_rgb(_IRIS[rng.integers(len(_IRIS))]),
        frames=_rgb(_FRAMES[rng.integers(len(_FRAMES))]),
        dark_hair=hair_idx in _DARK_HAIR,
        male_like=male,
        long_hair=not male and bool(rng.random() < 0.8),
        eyeglasses=bool(rng.random() < 0.3),
    )


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


def _face_outline(tr: FaceTraits, phi: np.ndarray) -> np.ndarray:
    """Points of the face outline at angles ``phi`` (y down: the lower half is ``sin(phi) > 0``).

    The upper half is an ellipse (forehead); the lower half a superellipse, squarer for larger
    ``jaw_power``. Both meet at ``phi = 0, pi``.
    """
    c, s = np.cos(phi), np.sin(phi)
    e = 2.0 / tr.jaw_power
    lower = s > 0
    x = np.where(lower, np.sign(c) * np.abs(c) ** e, c) * tr.face_w
    y = np.where(lower, np.abs(s) ** e, s) * tr.face_h
    return np.stack([x, y], 1)


def _geometry(tr: FaceTraits, ex: _Expr) -> tuple[dict[str, np.ndarray], np.ndarray, list[_Op]]:
    """Canonical-frame polygons by name, the 68 landmarks and the paint order.

    Returns:
        ``(parts, landmarks, ops)``: parts map a key to ``(k, 2)`` points; landmarks are ``(68, 2)``
        in iBUG order; ops list the paint operations, back to front.
    """
    fw, fh = tr.face_w, tr.face_h
    parts: dict[str, np.ndarray] = {}
    lm = np.zeros((68, 2), np.float64)
    skin = np.asarray(tr.skin, np.float32)
    ops: list[_Op] = []

    # Hair behind the head: a cap, and for long hair a curtain down to the shoulders.
    cap_cy, cap_a, cap_b = -0.06 * fh, fw * (1.14 if tr.long_hair else 1.08), fh * 1.06
    parts["hair_cap"] = _ellipse(0.0, cap_cy, cap_a, cap_b, 32)
    ops.append(_Op("hair_cap", tr.hair, 13))
    if tr.long_hair:
        parts["hair_long"] = np.array([(-cap_a, cap_cy), (cap_a, cap_cy), (1.05 * cap_a, 1.3 * fh), (-1.05 * cap_a, 1.3 * fh)])
        ops.append(_Op("hair_long", tr.hair, 13))

    parts["cloth"] = _ellipse(0.0, 1.9 * fh, 2.3 * fw, 0.62 * fh, 32)
    parts["neck"] = np.array([(-0.48 * fw, 0.5 * fh), (0.48 * fw, 0.5 * fh), (0.56 * fw, 1.6 * fh), (-0.56 * fw, 1.6 * fh)])
    ops += [_Op("cloth", None, 18), _Op("neck", _rgb(skin * 0.82), 17)]  # cloth colour is per sample
    if not tr.long_hair:  # long hair covers the ears
        for side, key, cls in ((-1, "ear_r", 9), (1, "ear_l", 8)):
            parts[key] = _ellipse(side * fw, tr.eye_y + 0.12 * fh, 0.16 * fw, 0.24 * fh, 16)
            ops.append(_Op(key, _rgb(skin * 0.92), cls))

    # Face outline; the jaw (0-16) runs from slightly above the centre on the image left, round
    # the chin (8), to the image right.
    parts["face"] = _face_outline(tr, np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False))
    ops.append(_Op("face", tr.skin, 1))
    alpha = 0.12
    lm[0:17] = _face_outline(tr, math.pi + alpha - np.arange(17) * (math.pi + 2 * alpha) / 16)

    # Fringe: the part of the cap above the hairline, painted over the forehead.
    x_end = 1.02 * fw
    hx = np.linspace(-x_end, x_end, 13)
    hy = tr.hairline + 0.15 * fh * (hx / fw) ** 2
    theta = math.asin(min(1.0, max(0.0, (cap_cy - hy[-1]) / cap_b)))
    arc = np.linspace(-theta, -(math.pi - theta), 15)
    parts["fringe"] = np.concatenate([np.stack([hx, hy], 1), np.stack([cap_a * np.cos(arc), cap_cy + cap_b * np.sin(arc)], 1)])
    ops.append(_Op("fringe", tr.hair, 13))

    # Nose: bridge 27-30 on the midline, base 31-35; drawn as a slightly darker shape.
    tip = tr.nose_y
    y27 = tr.eye_y - 0.03 * fh
    lm[27:31, 0] = 0.0
    lm[27:31, 1] = np.linspace(y27, tip, 4)
    nw = tr.nose_w
    lm[31:36, 0] = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * nw
    lm[31:36, 1] = tip + np.array([0.02, 0.055, 0.07, 0.055, 0.02]) * fh
    y29 = lm[29, 1]
    left = [(-0.08 * fw, y27), (-0.11 * fw, y29), (-1.1 * nw, tip - 0.02 * fh)]
    right = [(1.1 * nw, tip - 0.02 * fh), (0.11 * fw, y29), (0.08 * fw, y27)]
    parts["nose"] = np.concatenate([left, lm[31:36], right])
    parts["nostril_r"] = _ellipse(-0.45 * nw, tip + 0.04 * fh, 0.18 * nw, 0.025 * fh, 12)
    parts["nostril_l"] = _ellipse(0.45 * nw, tip + 0.04 * fh, 0.18 * nw, 0.025 * fh, 12)
    parts["nose_base"] = lm[31:36].copy()
    ops += [
        _Op("nose", _rgb(skin * 0.9), 2),
        _Op("nostril_r", _rgb(skin * 0.45), None),
        _Op("nostril_l", _rgb(skin * 0.45), None),
        _Op("nose_base", _rgb(skin * 0.7), None, line=1, closed=False),
    ]

    # Glasses: lens area (mask only, as in CelebAMask-HQ where eye_g covers the lenses and the
    # eyes are labelled on top); the frames are painted on the image last.
    if tr.eyeglasses:
        rx, ry = 1.6 * tr.eye_w, 1.25 * tr.eye_w  # clear of the widest-open lids
        parts["lens_r"] = _ellipse(-tr.eye_dx, tr.eye_y, rx, ry, 20)
        parts["lens_l"] = _ellipse(tr.eye_dx, tr.eye_y, rx, ry, 20)
        parts["bridge"] = np.array([(-tr.eye_dx + rx, tr.eye_y - 0.3 * ry), (tr.eye_dx - rx, tr.eye_y - 0.3 * ry)])
        parts["temple_r"] = np.array([(-tr.eye_dx - rx, tr.eye_y - 0.2 * ry), (-0.99 * fw, tr.eye_y - 0.25 * ry)])
        parts["temple_l"] = np.array([(tr.eye_dx + rx, tr.eye_y - 0.2 * ry), (0.99 * fw, tr.eye_y - 0.25 * ry)])
        ops += [_Op("lens_r", None, 3), _Op("lens_l", None, 3)]

    # Eyes: almond between an upper lid (rounder) and a lower lid; t = -1 is the image-left corner.
    # Per eye the iBUG order is corner(-1), upper(-1/3), upper(1/3), corner(1), lower(1/3), lower(-1/3).
    t = np.linspace(-1.0, 1.0, 13)
    eu, el = tr.eye_h * ex.eye_open, 0.6 * tr.eye_h * ex.eye_open
    for side, key, cls, first in ((-1, "eye_r", 5, 36), (1, "eye_l", 4, 42)):
        cx = side * tr.eye_dx
        x = cx + tr.eye_w * t
        upper = np.stack([x, tr.eye_y - eu * (1 - t**2) ** 0.7], 1)
        lower = np.stack([x, tr.eye_y + el * (1 - t**2) ** 0.9], 1)
        parts[key] = np.concatenate([upper, lower[-2:0:-1]])
        lm[first : first + 6] = [upper[0], upper[4], upper[8], upper[12], lower[8], lower[4]]
        iris_rx, iris_ry = 0.45 * tr.eye_w, 0.95 * (eu + el) / 2
        parts[key + "_iris"] = _ellipse(cx, tr.eye_y + (el - eu) / 2, iris_rx, iris_ry, 16)
        parts[key + "_pupil"] = _ellipse(cx, tr.eye_y + (el - eu) / 2, 0.45 * iris_rx, 0.45 * iris_ry, 12)
        ops += [
            _Op(key, _SCLERA, cls),
            _Op(key + "_iris", tr.iris, None),
            _Op(key + "_pupil", (15.0, 12.0, 12.0), None),
            _Op(key, _LID, None, line=1),
        ]

    # Brows: a tapered arc above each eye; u = 0 is the outer end. Anger lowers the inner ends.
    u = np.linspace(0.0, 1.0, 9)
    brow = _rgb(np.asarray(tr.hair, np.float32) * 0.8)
    for side, key, cls, idx in ((-1, "brow_r", 7, [0, 2, 4, 6, 8]), (1, "brow_l", 6, [8, 6, 4, 2, 0])):
        x_out, x_in = side * (tr.eye_dx + 1.3 * tr.eye_w), side * (tr.eye_dx - 0.85 * tr.eye_w)
        x = x_out + (x_in - x_out) * u
        y = tr.eye_y - tr.brow_gap - ex.brow_raise * fh - 0.04 * fh * 4 * u * (1 - u) + ex.brow_inner * fh * u
        half = 0.5 * tr.brow_thick * (0.65 + 0.35 * u)
        parts[key] = np.concatenate([np.stack([x, y - half], 1), np.stack([x, y + half], 1)[::-1]])
        first = 17 if side < 0 else 22
        lm[first : first + 5] = np.stack([x, y], 1)[idx]
        ops.append(_Op(key, brow, cls))

    # Mouth: a midline bent by the corner lift (and the sneer), lips of thickness ~sqrt(1 - t^2)
    # meeting at the corners, and an inner gap of the expression's opening. Opening drops the
    # jaw: the lower lip moves 70% of the gap, which keeps the upper lip clear of the nose.
    t = np.linspace(-1.0, 1.0, 13)  # steps of 1/6
    x = tr.mouth_w * ex.mouth_width * t
    mid = tr.mouth_y - ex.corner * fh * t**2 - ex.asym * fh * t
    hw = np.sqrt(np.clip(1 - t**2, 0, None))
    iu = mid - 0.3 * ex.opening * fh * hw
    il = mid + 0.7 * ex.opening * fh * hw
    ou = iu - tr.lip_upper * hw**0.6 * (1 - 0.3 * np.exp(-((t / 0.22) ** 2)))  # cupid's bow dip
    ol = il + tr.lip_lower * hw**0.6
    pts = {name: np.stack([x, v], 1) for name, v in (("mid", mid), ("iu", iu), ("il", il), ("ou", ou), ("ol", ol))}
    lm[48] = pts["mid"][0]
    lm[49:54] = pts["ou"][[2, 4, 6, 8, 10]]
    lm[54] = pts["mid"][12]
    lm[55:60] = pts["ol"][[10, 8, 6, 4, 2]]
    lm[60] = pts["mid"][1]
    lm[61:64] = pts["iu"][[3, 6, 9]]
    lm[64] = pts["mid"][11]
    lm[65:68] = pts["il"][[9, 6, 3]]
    parts["u_lip"] = np.concatenate([pts["ou"], pts["iu"][::-1]])
    parts["l_lip"] = np.concatenate([pts["il"], pts["ol"][::-1]])
    ops += [_Op("u_lip", tr.lips, 11), _Op("l_lip", tr.lips, 12)]
    if ex.opening > 0:
        parts["mouth"] = np.concatenate([pts["iu"], pts["il"][::-1]])
        ops.append(_Op("mouth", _MOUTH_INSIDE, 10))
        if ex.corner > 0:  # a broad smile shows the upper teeth
            teeth = np.minimum(iu + 0.45 * ex.opening * fh * hw, il)
            parts["teeth"] = np.concatenate([pts["iu"], np.stack([x, teeth], 1)[::-1]])
            ops.append(_Op("teeth", _TEETH, 10))
    else:
        parts["lip_line"] = pts["mid"]
        ops.append(_Op("lip_line", _rgb(np.asarray(tr.lips) * 0.55), None, line=1, closed=False))

    if tr.eyeglasses:
        for key in ("lens_r", "lens_l"):
            ops.append(_Op(key, tr.frames, None, line=1))
        for key in ("bridge", "temple_r", "temple_l"):
            ops.append(_Op(key, tr.frames, None, line=1, closed=False))
    return parts, lm, ops


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled to [-1, 1] (for the lighting gradient), cached per size."""
    r = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return r[None, :, None], r[:, None, None]


class SyntheticFaces:
    """SYNTHETIC cartoon faces with every label type; NOT a substitute for real data.

    Sample ``i`` shows identity ``i % n_identities`` with an expression drawn per sample. The same
    ``(seed, split, i)`` gives a byte-identical sample in every call and process; different splits
    draw different samples of the same identities.

    Args:
        n: number of samples.
        size: image side in pixels (square images).
        n_identities: number of distinct identities.
        seed: seed of identities and samples.
        split: split name; it seeds the per-sample draws, so "train" and "test" differ.
    """

    def __init__(self, n: int = 256, size: int = 64, n_identities: int = 16, seed: int = 0, split: str = "train") -> None:
        if n < 0 or size < 16 or n_identities < 1:
            raise ValueError(
                f"SyntheticFaces needs n >= 0, size >= 16 and n_identities >= 1; got n={n}, size={size}, n_identities={n_identities}"
            )
        self.n, self.size, self.n_identities, self.seed, self.split = n, size, n_identities, seed, split
        self._split_code = _split_code(split)
        self._traits: dict[int, FaceTraits] = {}
        self.info = DatasetInfo(
            name="synthetic_faces",
            split=split,
            labels=("identity", "landmarks", "mask", "attributes", "expression", "caption"),
            class_names={"expression": EXPRESSIONS, "attributes": ATTRIBUTES, "mask": MASK_CLASSES},
            landmark_scheme="68",
            flip_pairs=IBUG68_FLIP_PAIRS,
            synthetic=True,
        )

    def __len__(self) -> int:
        return self.n

    def traits(self, identity: int) -> FaceTraits:
        """The stable traits of ``identity`` (cached)."""
        tr = self._traits.get(identity)
        if tr is None:
            tr = self._traits[identity] = make_traits(self.seed, identity)
        return tr

    def __getitem__(self, index: int) -> Sample:
        i = operator.index(index)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"sample index {index} out of range for SyntheticFaces of length {self.n}")
        rng = np.random.default_rng([self.seed, self._split_code, i])
        identity = i % self.n_identities
        tr = self.traits(identity)
        expression = int(rng.integers(len(EXPRESSIONS)))
        ex = self._jitter(_EXPR[expression], expression, rng)
        image, mask, landmarks = self._render(tr, ex, rng)
        attributes = np.array(
            [expression == _HAPPY, tr.eyeglasses, tr.dark_hair, tr.male_like, ex.opening > _OPEN_THRESHOLD], np.uint8
        )
        return Sample(
            image=image,
            identity=identity,
            landmarks=landmarks,
            mask=mask,
            attributes=attributes,
            expression=expression,
            caption=synthetic_caption(expression, attributes),
            meta={"path": f"synthetic://{self.split}/{i}", "synthetic": True},
        )

    @staticmethod
    def _jitter(proto: _Expr, expression: int, rng: np.random.Generator) -> _Expr:
        """Per-sample intensity of the expression: offsets scaled by U(0.75, 1.25)."""
        k = rng.uniform(0.75, 1.25, 7)
        opening = proto.opening
        if expression == _HAPPY and rng.random() < 0.5:  # half the smiles are open
            opening = 0.13
        return _Expr(
            brow_raise=proto.brow_raise * k[0],
            brow_inner=proto.brow_inner * k[1],
            eye_open=1.0 + (proto.eye_open - 1.0) * k[2],
            mouth_width=1.0 + (proto.mouth_width - 1.0) * k[3],
            corner=proto.corner * k[4],
            opening=opening * k[5],
            asym=proto.asym * k[6] * (1 if rng.random() < 0.5 else -1),
        )

    def _render(self, tr: FaceTraits, ex: _Expr, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.size
        parts, lm, ops = _geometry(tr, ex)

        # Pose: one similarity transform for every point (landmarks included).
        angle = math.radians(rng.uniform(-12.0, 12.0))
        scale = rng.uniform(0.9, 1.08) * size
        centre = (size - 1) / 2 + rng.uniform(-0.05, 0.05, 2) * size + np.array([0.0, 0.03 * size])
        rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        keys = list(parts)
        allpts = np.concatenate([parts[k] for k in keys] + [lm]) @ rot.T + centre
        # cv2 draws at 1/16 px precision with shift=4; landmarks stay float.
        fixed = np.round(allpts * 16).astype(np.int32)
        bounds = np.cumsum([len(parts[k]) for k in keys])
        poly = dict(zip(keys, np.split(fixed, bounds)[: len(keys)], strict=True))
        landmarks = allpts[bounds[-1] :].astype(np.float32)

        background = rng.uniform(20, 235, 3)
        cloth = _rgb(rng.uniform(20, 235, 3))
        image = np.empty((size, size, 3), np.uint8)
        image[:] = np.round(background).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        thick = max(1, round(size / 64))
        for op in ops:
            pts = [poly[op.key]]
            colour = cloth if op.key == "cloth" else op.colour
            if op.line:
                if colour is not None:
                    cv2.polylines(image, pts, op.closed, colour, thick * op.line, cv2.LINE_AA, shift=4)
                continue
            if colour is not None:
                cv2.fillPoly(image, pts, colour, cv2.LINE_AA, shift=4)
            if op.cls is not None:
                cv2.fillPoly(mask, pts, op.cls, cv2.LINE_8, shift=4)

        # Lighting: global gain times a linear gradient in a random direction, then sensor noise;
        # computed in float32 once and rounded back to uint8 once.
        gain = rng.uniform(0.8, 1.15)
        strength, direction = rng.uniform(0.0, 0.3), rng.uniform(0.0, 2.0 * math.pi)
        gx, gy = _grid(size)
        light = gain * (1.0 + strength * (math.cos(direction) * gx + math.sin(direction) * gy))
        noise = rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(rng.uniform(1.0, 4.0))
        out = image.astype(np.float32) * light + noise
        image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return image, mask, landmarks


def build_synthetic(params: SyntheticParams) -> SyntheticFaces:
    """The registry's entry point for ``core.synthetic``."""
    return SyntheticFaces(n=params.n, size=params.size, n_identities=params.n_identities, seed=params.seed, split=params.split)
