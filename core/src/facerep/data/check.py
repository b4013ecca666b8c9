"""``facerep data check``: counts, label ranges and image statistics per split, so that a broken
copy of a dataset is caught before anything is trained on it.

Per split: number of samples, unreadable files (each named), resolution range, a sharpness
statistic (mean absolute difference of horizontally adjacent grey pixels at a 48 px short side:
~14 on the FER2013 export, ~3.7 on the widely copied blurred one, see notes/science.md), labels
present with their ranges, and pixel-identical duplicates inside the split. Across splits:
pixel-identical images shared by two splits (FER2013 has train/test duplicates).

A file that cannot be read (missing, undecodable, not UTF-8, an image header claiming an absurd
size) never stops the check: it is counted as unreadable with its reason, the first few are named
in the split's problems and all of the first 20 in ``errors``.

Problems (unreadable files, labels out of range, images shared across splits) fail the check;
warnings (low sharpness, duplicates inside a split) are reported and fail it only with ``--strict``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

import cv2
import numpy as np

from facerep.errors import DataError
from facerep.protocols import FaceDataset
from facerep.types import Sample

__all__ = ["BLUR_THRESHOLD", "check_dataset", "check_splits", "cross_split_duplicates", "sharpness"]

#: Mean absolute horizontal difference below which a face set looks blurred (FER2013: 14 vs 3.7).
BLUR_THRESHOLD = 6.0


#: How many unreadable files (path and reason) the problem line of a split names.
FIRST_ERRORS = 3


#: Images are compared at this short side (FER2013's 48 px): adjacent-pixel differences shrink as
#: resolution grows, so a 512 px face must be brought to a common scale first.
SHARPNESS_SIZE = 48


def sharpness(image: np.ndarray) -> float:
    """Mean |I(x+1, y) - I(x, y)| of the grey image (0-255 scale), after an area-downscale to a
    short side of :data:`SHARPNESS_SIZE` (smaller images are used as they are)."""
    grey = image.astype(np.float32).mean(2) if image.ndim == 3 else image.astype(np.float32)
    short = min(grey.shape)
    if short > SHARPNESS_SIZE:
        f = SHARPNESS_SIZE / short
        grey = cv2.resize(grey, (max(2, round(grey.shape[1] * f)), max(2, round(grey.shape[0] * f))), interpolation=cv2.INTER_AREA)
    return float(np.abs(np.diff(grey, axis=1)).mean())


def _label_summary(field: str, values: list[Any], info_classes: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"annotated": len(values)}
    if not values:
        return out
    if field in ("identity", "expression"):
        arr = np.asarray(values, dtype=np.int64)
        counts = Counter(arr.tolist())
        out.update(min=int(arr.min()), max=int(arr.max()), classes=len(counts), smallest_class=min(counts.values()))
        if info_classes and (arr.min() < 0 or arr.max() >= len(info_classes)):
            out["problem"] = f"class ids {int(arr.min())}..{int(arr.max())} outside the {len(info_classes)} named classes"
    elif field == "landmarks":
        ks = Counter(len(v) for v in values)
        out.update(points=sorted(ks))
        if len(ks) > 1:
            out["problem"] = f"samples have different landmark counts {dict(ks)}"
    elif field == "mask":
        vals = np.unique(np.concatenate([np.unique(v) for v in values]))
        out.update(min=int(vals.min()), max=int(vals.max()), values=len(vals))
        if info_classes and vals.max() >= len(info_classes):
            out["problem"] = f"mask values up to {int(vals.max())} but {len(info_classes)} classes"
    elif field in ("attributes", "aus"):
        arr = np.stack([np.asarray(v, dtype=np.float64) for v in values])
        out.update(columns=int(arr.shape[1]), min=float(arr.min()), max=float(arr.max()),
                   positive_rate_min=float((arr > 0).mean(0).min()), positive_rate_max=float((arr > 0).mean(0).max()))
    return out


def check_dataset(dataset: FaceDataset, *, limit: int | None = None) -> dict[str, Any]:
    """Statistics of one split; reads every sample (or the first ``limit``); never raises on a bad
    file (each is reported)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    sizes: list[tuple[int, int]] = []
    sharp: list[float] = []
    hashes: dict[str, list[int]] = defaultdict(list)
    labels: dict[str, list[Any]] = defaultdict(list)
    errors: list[str] = []
    for i in range(n):
        try:
            s: Sample = dataset[i]
        except DataError as exc:  # its message names the file and the reason
            errors.append(f"#{i}: {exc}")
            continue
        except Exception as exc:  # a check reports a bad file and goes on, whatever failed
            errors.append(f"#{i}: {type(exc).__name__}: {exc}")
            continue
        sizes.append(s.image.shape[:2])
        sharp.append(sharpness(s.image))
        hashes[hashlib.blake2b(np.ascontiguousarray(s.image).tobytes(), digest_size=16).hexdigest()].append(i)
        for field in Sample.LABEL_FIELDS:
            value = s.label(field)
            if value is not None and field != "caption":
                labels[field].append(value)
    hw = np.array(sizes) if sizes else np.zeros((0, 2))
    report: dict[str, Any] = {
        "name": dataset.info.name, "split": dataset.info.split, "samples": len(dataset), "checked": n,
        "unreadable": len(errors), "errors": errors[:20],
        "height": [int(hw[:, 0].min()), int(np.median(hw[:, 0])), int(hw[:, 0].max())] if len(hw) else [],
        "width": [int(hw[:, 1].min()), int(np.median(hw[:, 1])), int(hw[:, 1].max())] if len(hw) else [],
        "sharpness_mean": float(np.mean(sharp)) if sharp else float("nan"),
        "sharpness_p10": float(np.percentile(sharp, 10)) if sharp else float("nan"),
        "duplicates_within": sum(len(v) - 1 for v in hashes.values() if len(v) > 1),
        "labels": {f: _label_summary(f, v, dataset.info.class_names.get(f, ())) for f, v in labels.items()},
        "_hashes": hashes,
    }
    problems = [f"{len(errors)} unreadable file(s), first: " + "; ".join(errors[:FIRST_ERRORS])] if errors else []
    warnings = []
    if sharp and report["sharpness_mean"] < BLUR_THRESHOLD:
        warnings.append(f"images look blurred: mean horizontal pixel difference {report['sharpness_mean']:.2f} < {BLUR_THRESHOLD} "
                        f"at {SHARPNESS_SIZE} px (a blurred copy of the dataset?)")
    if report["duplicates_within"]:
        warnings.append(f"{report['duplicates_within']} pixel-identical duplicate image(s) inside the split")
    for field, summary in report["labels"].items():
        if "problem" in summary:
            problems.append(f"label {field}: {summary['problem']}")
    report["problems"], report["warnings"] = problems, warnings
    return report


def cross_split_duplicates(reports: list[dict[str, Any]]) -> list[str]:
    """Pixel-identical images shared by two checked splits."""
    out = []
    for a in range(len(reports)):
        for b in range(a + 1, len(reports)):
            ha, hb = reports[a]["_hashes"], reports[b]["_hashes"]
            shared = set(ha) & set(hb)
            if shared:
                ex = next(iter(shared))
                out.append(f"{len(shared)} image(s) of {reports[a]['name']}:{reports[a]['split']} are pixel-identical to images of "
                           f"{reports[b]['name']}:{reports[b]['split']} (e.g. #{ha[ex][0]} and #{hb[ex][0]})")
    return out


def check_splits(datasets: list[FaceDataset], *, limit: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Check each split, then duplicates across them. Returns (reports, cross-split problems)."""
    reports = [check_dataset(d, limit=limit) for d in datasets]
    return reports, cross_split_duplicates(reports)
