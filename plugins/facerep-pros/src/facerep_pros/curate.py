"""``facerep curate SRC DST``: ProS's face-aware curation (``specs/methods.md`` §4.1-4.3) for an
unlabelled image folder.

Per image: decode (an unreadable file is reported, never fatal); detect faces; keep the image when
one face dominates it (the largest face covers at least ``min_face_fraction`` of the image and any
second face is smaller than ``max_second_face`` of the largest); write a square crop centred on that
face, ``margin`` times the face box's side (ProS/§4.3: the box enlarged ~1.5-2x), resized to
``size``. Optionally, *retrieval*: the kept crops and a folder of seed images are embedded with any
facerep backbone; a crop is kept when its cosine similarity to the nearest seed reaches
``min_similarity`` (or it is among the ``top`` most similar). ``report.json`` in DST says, for every
source file, what was decided and why.

SRC is only read. DST must be empty or new (``overwrite`` replaces crops of the same names only).
The detector is dlib's HOG frontal-face detector (``pip install facerep-pros[detect]``; binary
wheel ``dlib-bin``). It misses profile faces by design, which is the point here: "face-dominant"
images for pretraining.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import cv2
import numpy as np

from facerep.config import in_range, positive
from facerep.errors import ConfigError, DataError

__all__ = ["CurateParams", "DlibHOGDetector", "FaceDecision", "add_curate_command", "curate", "decide", "face_crop"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: ``(x0, y0, x1, y1)`` face boxes in pixels, most confident first.
Detector = Callable[[np.ndarray], list[tuple[float, float, float, float]]]


@attrs.frozen
class CurateParams:
    """Attributes:
    min_face_fraction: the largest face's box area over the image area, at least.
    max_second_face: a second face larger than this fraction of the largest makes the image "not one face".
    margin: crop side = margin x the face box's longer side, centred on the box.
    size: side of the written crops (px).
    upsample: dlib's detector upsampling (1 finds faces down to ~40 px; 0 is ~4x faster, ~80 px).
    min_similarity, top: retrieval by similarity to seed images (needs ``seeds`` and ``weights``).
    """

    min_face_fraction: float = attrs.field(default=0.1, validator=in_range(0, 1, hi_inclusive=True))
    max_second_face: float = attrs.field(default=0.25, validator=in_range(0, 1, hi_inclusive=True))
    margin: float = attrs.field(default=1.8, validator=positive)
    size: int = attrs.field(default=256, validator=positive)
    upsample: int = attrs.field(default=1, validator=in_range(0, 8, hi_inclusive=True))
    min_similarity: float | None = None
    top: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive))


@attrs.frozen
class FaceDecision:
    """``rule``: ``kept``, ``no_face``, ``several_faces`` or ``small_face`` (the report counts these);
    ``reason``: the same in words, with the numbers."""

    kept: bool
    rule: str
    reason: str
    faces: int = 0
    face_fraction: float = 0.0
    box: tuple[int, int, int, int] | None = None  # the face crop's square (x0, y0, x1, y1), may leave the image


class DlibHOGDetector:
    """dlib's HOG + linear SVM frontal-face detector (King, "Dlib-ml", JMLR 2009), offline."""

    def __init__(self, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise ConfigError("facerep curate needs a face detector: pip install 'facerep-pros[detect]' (dlib-bin)") from None
        self.detector = dlib.get_frontal_face_detector()
        self.upsample = upsample

    def __call__(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        rects, scores, _ = self.detector.run(np.ascontiguousarray(rgb), self.upsample, 0.0)
        order = np.argsort(scores)[::-1]
        return [(rects[i].left(), rects[i].top(), rects[i].right() + 1, rects[i].bottom() + 1) for i in order]


def decide(image_hw: tuple[int, int], boxes: Sequence[tuple[float, float, float, float]], params: CurateParams) -> FaceDecision:
    """Keep or drop one image from its face boxes (pure: tested without a detector)."""
    if not boxes:
        return FaceDecision(False, "no_face", "no face found")
    h, w = image_hw
    clipped = [(max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)) for x0, y0, x1, y1 in boxes]  # dlib's boxes may leave the image
    areas = sorted(((max(x1 - x0, 0) * max(y1 - y0, 0), (x0, y0, x1, y1)) for x0, y0, x1, y1 in clipped), reverse=True)
    (largest, (x0, y0, x1, y1)) = areas[0]
    fraction = largest / float(h * w)
    if len(areas) > 1 and areas[1][0] > params.max_second_face * largest:
        second = areas[1][0] / largest
        return FaceDecision(False, "several_faces", f"{len(areas)} faces, the second {second:.2f} of the largest", len(areas), fraction)
    if fraction < params.min_face_fraction:
        return FaceDecision(False, "small_face", f"face covers {fraction:.3f} of the image (< {params.min_face_fraction})", len(areas),
                            fraction)
    side = params.margin * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    return FaceDecision(True, "kept", "one dominant face", len(areas), fraction, box)


def face_crop(rgb: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The square ``box`` resized to ``size``; parts outside the image are filled by reflection
    (no black bands for a face near the border)."""
    x0, y0, x1, y1 = box
    h, w = rgb.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    src = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT_101) if pad else rgb
    patch = src[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _embed(path_lists: Sequence[Sequence[Path]], weights: str, batch: int = 64) -> list[np.ndarray]:
    """Unit pooled features of each list of images, with one facerep backbone loaded once (its own
    input size and normalisation)."""
    import torch

    from facerep.checkpoint import load_backbone, read_sidecar
    from facerep.data.io import decode_image

    backbone = load_backbone(weights).eval()
    side = int((read_sidecar(weights).get("backbone", {}).get("params") or {}).get("img_size") or 112)
    result = []
    with torch.no_grad():
        for paths in path_lists:
            out = []
            for i in range(0, len(paths), batch):
                imgs = [cv2.resize(decode_image(p), (side, side), interpolation=cv2.INTER_AREA) for p in paths[i : i + batch]]
                x = backbone.preprocess(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous())
                out.append(torch.nn.functional.normalize(backbone(x).pooled.float(), dim=1).numpy())
            result.append(np.concatenate(out))
    return result


class _FileJob:
    """Decide on one source file and write its crop; picklable for worker processes, which build
    their own detector on first use."""

    def __init__(self, src: Path, dst: Path, params: CurateParams) -> None:
        self.src, self.dst, self.params = src, dst, params
        self.detector: Detector | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "params": self.params, "detector": None}

    def __call__(self, path: Path) -> dict[str, Any]:
        from facerep.data.io import decode_image
        from facerep.workdir import atomic_write

        if self.detector is None:
            self.detector = DlibHOGDetector(self.params.upsample)
        rel = path.relative_to(self.src)
        try:
            rgb = decode_image(path)
        except DataError as exc:
            return {"file": str(rel), "kept": False, "rule": "unreadable", "reason": str(exc)}
        d = decide(rgb.shape[:2], self.detector(rgb), self.params)
        rec = {"file": str(rel), "kept": d.kept, "rule": d.rule, "reason": d.reason, "faces": d.faces,
               "face_fraction": round(d.face_fraction, 4)}
        if d.kept:
            out = (self.dst / "faces" / rel).with_suffix(".png" if path.suffix.lower() == ".png" else ".jpg")
            out.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(out.suffix, cv2.cvtColor(face_crop(rgb, d.box, self.params.size), cv2.COLOR_RGB2BGR))
            if not ok:
                raise DataError(f"curate: could not encode the crop of {path}")
            with atomic_write(out) as tmp:
                tmp.write_bytes(buf.tobytes())
            rec.update(box=list(d.box), crop=str(out.relative_to(self.dst)))
        return rec


def curate(src: str | Path, dst: str | Path, params: CurateParams | None = None, *, detector: Detector | None = None,
           seeds: str | Path | None = None, weights: str | None = None, overwrite: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run the curation; returns the report (also written to ``DST/report.json``). ``workers`` > 1
    detects in that many processes (dlib's detector is single-threaded)."""
    params = params or CurateParams()
    from facerep.workdir import atomic_write_text

    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise DataError(f"curate: source folder {src} not found")
    if dst == src or src in dst.parents:
        raise ConfigError(f"curate: the destination {dst} is inside the source {src}; choose a folder outside it (SRC is only read)")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise ConfigError(f"curate: {dst} is not empty; choose a new folder or pass --overwrite")
    if (params.min_similarity is not None or params.top is not None) != (seeds is not None and weights is not None):
        raise ConfigError("curate: retrieval needs --seeds, --weights and one of --min-similarity / --top, together")
    if weights is not None and not Path(weights).is_file():  # checked before any crop is written
        raise DataError(f"curate: --weights {weights} not found")
    if seeds is not None and not Path(seeds).is_dir():
        raise DataError(f"curate: --seeds folder {seeds} not found")
    files = _images(src)
    if not files:
        raise DataError(f"curate: no images ({', '.join(IMAGE_SUFFIXES)}) under {src}")
    dst.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    job = _FileJob(src, dst, params)
    if workers <= 1 or detector is not None:
        job.detector = detector or DlibHOGDetector(params.upsample)
        records = [job(path) for path in files]
    else:  # one detector per process; crops are written by the workers, the records come back in file order
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            records = list(pool.imap(job, files, chunksize=16))
    detect_seconds = time.perf_counter() - start
    if seeds is not None:
        _retrieve(records, dst, Path(seeds), weights, params)
    counts = Counter(r["rule"] for r in records)
    report = {"source": str(src), "destination": str(dst), "params": attrs.asdict(params),
              "detector": type(detector).__name__ if detector is not None else "DlibHOGDetector", "workers": workers,
              "seeds": str(seeds) if seeds else None, "weights": weights, "images": len(records),
              "kept": sum(r["kept"] for r in records), "counts": dict(counts),
              "images_per_second": round(len(records) / max(detect_seconds, 1e-9), 2), "files": records}
    atomic_write_text(dst / "report.json", json.dumps(report, indent=2))
    return report


def _retrieve(records: list[dict[str, Any]], dst: Path, seeds: Path, weights: str | None, params: CurateParams) -> None:
    """Second stage: keep the crops nearest to the seed images; the others are removed from DST."""
    seed_files = _images(seeds)
    if not seed_files:
        raise DataError(f"curate: no seed images under {seeds}")
    kept = [r for r in records if r["kept"]]
    if not kept:
        return
    crops, seeds_z = _embed([[dst / r["crop"] for r in kept], seed_files], weights)
    sim = crops @ seeds_z.T
    nearest = sim.max(1)
    keep = np.ones(len(kept), bool)
    if params.min_similarity is not None:
        keep &= nearest >= params.min_similarity
    if params.top is not None:
        keep &= np.isin(np.arange(len(kept)), np.argsort(-nearest, kind="stable")[: params.top])
    for r, s, k in zip(kept, nearest, keep, strict=True):
        r["similarity"] = round(float(s), 4)
        if not k:
            (dst / r.pop("crop")).unlink()
            r.update(kept=False, rule="not_retrieved", reason=f"similarity {s:.3f} to the nearest seed below the cut")


def add_curate_command(subparsers: Any) -> None:
    p = subparsers.add_parser("curate", help="keep images dominated by one face and write face-centred crops (ProS), with a JSON report")
    p.add_argument("src", help="folder of images (read only, searched recursively)")
    p.add_argument("dst", help="new or empty folder: faces/<same relative paths> and report.json")
    d = CurateParams()
    p.add_argument("--min-face-fraction", type=float, default=d.min_face_fraction, help="face box area / image area, at least")
    p.add_argument("--max-second-face", type=float, default=d.max_second_face, help="a second face larger than this x the largest: drop")
    p.add_argument("--margin", type=float, default=d.margin, help="crop side / face box side")
    p.add_argument("--size", type=int, default=d.size, help="crop side in pixels")
    p.add_argument("--upsample", type=int, default=d.upsample, help="detector upsampling (0: faster, misses faces < ~80 px)")
    p.add_argument("--seeds", help="folder of seed face images for retrieval")
    p.add_argument("--weights", help="facerep backbone.safetensors that embeds crops and seeds")
    p.add_argument("--min-similarity", type=float, help="retrieval: cosine to the nearest seed, at least")
    p.add_argument("--top", type=int, help="retrieval: keep only the N crops nearest to the seeds")
    p.add_argument("--workers", type=int, default=1, help="detector processes (dlib uses one core each)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")
    p.set_defaults(func=_curate_command)


def _curate_command(args: Any) -> int:
    from facerep.config import structure

    params = structure({"min_face_fraction": args.min_face_fraction, "max_second_face": args.max_second_face, "margin": args.margin,
                        "size": args.size, "upsample": args.upsample, "min_similarity": args.min_similarity, "top": args.top},
                       CurateParams, path="curate")
    if args.workers < 1:
        raise ConfigError(f"curate: --workers must be at least 1, got {args.workers}")
    report = curate(args.src, args.dst, params, seeds=args.seeds, weights=args.weights, overwrite=args.overwrite, workers=args.workers)
    print(f"kept {report['kept']} of {report['images']} images ({report['images_per_second']} images/s); "
          f"{json.dumps(report['counts'])}; report: {Path(args.dst) / 'report.json'}")
    return 0
