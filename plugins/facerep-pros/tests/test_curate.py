"""`facerep curate` on real faces from ../shared/data: keep/drop decisions with dlib's detector (a
face vs background, blank, two faces, a small face, a corrupt file), face-centred crops, retrieval
by similarity to seeds, the report, and SRC left untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerep.cli import main
from facerep.data.folder import expand_path
from facerep.errors import DataError
from facerep_pros.curate import CurateParams, curate, decide, face_crop

UTK = expand_path("${FACEREP_DATA}/utkface")
MTFL = expand_path("${FACEREP_DATA}/mtfl/net_7876")
needs_data = pytest.mark.skipif(not UTK.is_dir() or not MTFL.is_dir(), reason="needs ../shared/data (or $FACEREP_DATA)")


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_decide_keeps_one_dominant_face_and_says_why_not_otherwise():
    p = CurateParams(min_face_fraction=0.1, max_second_face=0.25, margin=2.0)
    d = decide((100, 100), [(30, 30, 70, 70)], p)
    assert d.kept and d.box == (10, 10, 90, 90) and d.face_fraction == pytest.approx(0.16)
    assert decide((100, 100), [], p).rule == "no_face"
    two = decide((100, 100), [(0, 0, 40, 40), (50, 50, 80, 80)], p)
    assert not two.kept and two.faces == 2 and "2 faces" in two.reason
    assert decide((100, 100), [(0, 0, 40, 40), (50, 50, 60, 60)], p).kept, "a small face in the background does not count"
    small = decide((400, 400), [(0, 0, 40, 40)], p)
    assert not small.kept and "covers 0.010" in small.reason
    assert decide((100, 100), [(-20, -20, 40, 40)], p).face_fraction == pytest.approx(0.16), "boxes are clipped to the image"


def test_face_crop_is_centred_and_reflects_outside_the_image():
    img = np.repeat(np.arange(20, dtype=np.uint8)[None, :, None] * 10, 20, axis=0).repeat(3, axis=2)  # columns 0, 10, ..., 190
    crop = face_crop(img, (-10, 0, 10, 20), 20)  # half of the square is left of the image
    assert crop.shape == (20, 20, 3)
    np.testing.assert_array_equal(crop[:, 10:], img[:, :10])
    np.testing.assert_array_equal(crop[:, :10], img[:, 10:0:-1]), "mirrored about column 0 (no black band)"
    assert face_crop(img, (0, 0, 10, 10), 5).shape == (5, 5, 3)


@needs_data
def test_curate_keeps_faces_and_drops_background_blank_crowds_small_faces_and_corrupt_files(tmp_path, capsys):
    pytest.importorskip("dlib", reason="facerep-pros[detect]")
    src = tmp_path / "src"
    faces = sorted(UTK.glob("*.jpg"))[:3]
    for i, f in enumerate(faces):
        _write(src / "faces" / f"face{i}.jpg", _read(f))
    wild = _read(sorted(MTFL.glob("*.jpg"))[0])
    a, b = _read(faces[0]), _read(faces[1])
    _write(src / "two_faces.jpg", np.hstack([a, b]))
    canvas = np.full((800, 800, 3), 128, np.uint8)
    canvas[300:400, 300:400] = cv2.resize(a, (100, 100))
    _write(src / "small_face.jpg", canvas)
    _write(src / "blank.png", np.full((200, 200, 3), 90, np.uint8))
    _write(src / "background.jpg", cv2.resize(a[:40, :40], (200, 200)))  # a corner of the photo: no face in it
    _write(src / "wild.jpg", wild)
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    before = _digest(src)
    dst = tmp_path / "dst"
    assert main(["curate", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    report = json.loads((dst / "report.json").read_text())
    by_file = {r["file"]: r for r in report["files"]}
    kept = sorted(f for f, r in by_file.items() if r["kept"])
    assert kept == ["faces/face0.jpg", "faces/face1.jpg", "faces/face2.jpg", "wild.jpg"], by_file
    assert by_file["blank.png"]["rule"] == by_file["background.jpg"]["rule"] == "no_face"
    assert by_file["two_faces.jpg"]["faces"] == 2 and "2 faces" in by_file["two_faces.jpg"]["reason"]
    assert by_file["small_face.jpg"]["rule"] == "small_face" and "covers 0.0" in by_file["small_face.jpg"]["reason"]
    assert by_file["corrupt.jpg"]["rule"] == "unreadable" and "corrupt.jpg" in by_file["corrupt.jpg"]["reason"]
    assert report["images"] == 9 and report["kept"] == 4 and report["images_per_second"] > 0
    assert report["counts"] == {"kept": 4, "no_face": 2, "several_faces": 1, "small_face": 1, "unreadable": 1}
    assert "kept 4 of 9 images" in out
    for f in kept:
        crop = cv2.imread(str(dst / by_file[f]["crop"]))
        assert crop.shape == (256, 256, 3)
    assert _digest(src) == before, "SRC is only read"
    # two detector processes: the same decisions, in file order, and the same crops
    parallel = curate(src, tmp_path / "dst2", workers=2)
    assert parallel["files"] == report["files"] and parallel["workers"] == 2
    assert _digest(tmp_path / "dst2" / "faces") == _digest(dst / "faces")
    # a second run into the same DST is refused without --overwrite and changes nothing
    listing = _digest(dst)
    assert main(["curate", str(src), str(dst)]) != 0
    assert "not empty" in capsys.readouterr().err and _digest(dst) == listing


@needs_data
def test_retrieval_keeps_the_crops_nearest_to_the_seeds(tmp_path):
    pytest.importorskip("dlib", reason="facerep-pros[detect]")
    import torch

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.checkpoint import export_backbone
    from facerep.config import ComponentConfig

    torch.manual_seed(0)
    weights = export_backbone(TimmBackbone(TimmBackboneParams(model="resnet10t")), tmp_path / "backbone.safetensors",
                              backbone=ComponentConfig("core.timm", {"model": "resnet10t"}), method="test")
    src, seeds = tmp_path / "src", tmp_path / "seeds"
    faces = sorted(UTK.glob("*.jpg"))[:4]
    for i, f in enumerate(faces):
        _write(src / f"face{i}.jpg", _read(f))
    _write(seeds / "seed.jpg", _read(faces[2]))
    report = curate(src, tmp_path / "dst", CurateParams(top=1), seeds=seeds, weights=str(weights))
    kept = [r for r in report["files"] if r["kept"]]
    sims = {r["file"]: r["similarity"] for r in report["files"]}
    assert len(kept) == 1 and kept[0]["file"] == max(sims, key=sims.get)
    assert sorted(p.name for p in (tmp_path / "dst" / "faces").iterdir()) == [Path(kept[0]["crop"]).name]
    assert all(r["rule"] == "not_retrieved" for r in report["files"] if not r["kept"])
    with pytest.raises(Exception, match="retrieval needs"):
        curate(src, tmp_path / "dst2", CurateParams(top=1))
    with pytest.raises(DataError, match=r"nope\.safetensors not found"):  # before any crop is written
        curate(src, tmp_path / "dst3", CurateParams(top=1), seeds=seeds, weights=str(tmp_path / "nope.safetensors"))
    assert not (tmp_path / "dst3").exists()
