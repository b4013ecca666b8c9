"""Landmark sources on real faces (dlib's 68 points on UTKFace), computed once and cached, images
without landmarks left out and counted, bad landmark files named."""

from __future__ import annotations

import shutil

import attrs
import cv2
import numpy as np
import pytest

from facerep.data.folder import expand_path
from facerep.errors import ConfigError, DataError
from facerep_lafs.landmarks import LandmarkedDataset, LandmarkedParams, flip_order

UTK = expand_path("${FACEREP_DATA}/utkface")


def test_flip_order_is_a_mirror_involution_of_the_68_point_scheme():
    order = flip_order("68")
    assert sorted(order) == list(range(68)) and np.array_equal(order[order], np.arange(68))
    assert order[36] == 45 and order[30] == 30 and order[48] == 54, "outer eye corners and mouth corners swap; the nose tip stays"
    assert flip_order("196") is None


@pytest.fixture
def folder(tmp_path):
    if not UTK.is_dir():
        pytest.skip("needs ../shared/data (or $FACEREP_DATA)")
    src = tmp_path / "faces"
    src.mkdir()
    for f in sorted(UTK.glob("*.jpg"))[:3]:
        shutil.copy(f, src / f.name)
    cv2.imwrite(str(src / "zz_blank.png"), np.full((200, 200, 3), 80, np.uint8))
    return src


def test_dlib68_on_real_faces_is_computed_once_and_cached(folder, tmp_path, monkeypatch):
    pytest.importorskip("dlib", reason="facerep-lafs[dlib]")
    params = LandmarkedParams(dataset={"name": "core.image_folder", "params": {"roots": [str(folder)]}}, fallback="drop",
                              cache_dir=str(tmp_path / "cache"))
    ds = LandmarkedDataset(params)
    assert ds.report["images"] == 4 and ds.report["with_landmarks"] == 3 and len(ds) == 3, "the blank image has no face: left out"
    for i in range(len(ds)):
        s = ds[i]
        p = s.landmarks
        assert p.shape == (68, 2) and p.dtype == np.float32
        assert (p >= -5).all() and (p[:, 0] < s.image.shape[1] + 5).all() and (p[:, 1] < s.image.shape[0] + 5).all()
        assert p[36:48, 1].mean() < p[30, 1] < p[48:68, 1].mean(), "eyes above the nose tip above the mouth"
        assert p[36:42, 0].mean() < p[42:48, 0].mean(), "the first eye (iBUG 36-41) is on the image's left"
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("landmarks recomputed instead of read from the cache")

    monkeypatch.setattr("facerep_lafs.landmarks.Dlib68Landmarker.__call__", refuse)
    again = LandmarkedDataset(params)
    np.testing.assert_array_equal(again[1].landmarks, ds[1].landmarks)


def test_a_landmarks_file_is_checked_and_named(folder, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, points=np.zeros((4, 68, 3), np.float32))
    with pytest.raises(DataError, match=r"bad\.npz: 'points' must be \(N, L, 2\)"):
        LandmarkedDataset(LandmarkedParams(dataset={"name": "core.image_folder", "params": {"roots": [str(folder)]}}, source="file",
                                           path=str(bad)))
    short = tmp_path / "short.npz"
    np.savez(short, points=np.zeros((2, 5, 2), np.float32))
    with pytest.raises(DataError, match="landmarks for 2 images"):
        LandmarkedDataset(LandmarkedParams(dataset={"name": "core.image_folder", "params": {"roots": [str(folder)]}}, source="file",
                                           path=str(short)))
    good = tmp_path / "good.npz"
    pts = np.random.default_rng(0).uniform(0, 100, (4, 5, 2)).astype(np.float32)
    np.savez(good, points=pts, ok=np.array([True, False, True, True]))
    ds = LandmarkedDataset(LandmarkedParams(dataset={"name": "core.image_folder", "params": {"roots": [str(folder)]}}, source="file",
                                            path=str(good)))
    assert len(ds) == 3 and np.array_equal(ds[1].landmarks, pts[2]) and ds.flip_order is not None


def test_the_landmark_vit_finds_the_landmarks_of_the_images_it_is_given(folder):
    """``forward(images)`` (every facerep task and protocol) = ``forward_points`` at dlib's points of
    the image as the network sees it (resized to input_size)."""
    pytest.importorskip("dlib", reason="facerep-lafs[dlib]")
    import torch

    from facerep_lafs.landmark_vit import LandmarkViT, LandmarkViTParams
    from facerep_lafs.landmarks import Dlib68Landmarker

    torch.manual_seed(0)
    vit = LandmarkViT(LandmarkViTParams(n_landmarks=68, patch=8, input_size=112, embed_dim=32, depth=1, heads=2, mlp_ratio=2.0,
                                        drop_path_rate=0.0, dropout=0.0)).eval()
    img = cv2.cvtColor(cv2.imread(str(sorted(folder.glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (112, 112), interpolation=cv2.INTER_AREA)
    x = vit.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None].contiguous())
    pts, how = Dlib68Landmarker(1)(img)
    assert how == "detected"
    with torch.no_grad():
        torch.testing.assert_close(vit(x).pooled, vit.forward_points(x, torch.from_numpy(pts)[None]).pooled)
        torch.testing.assert_close(vit.landmarks(x)[0], torch.from_numpy(pts))
    assert "_landmarker" not in dict(vit.named_modules()) and not any("landmarker" in k for k in vit.state_dict())


def _landmarks_model(directory, n_points: int = 68, size: int = 32):
    """A saved landmarks model (``crop: image``) with random weights: the source's plumbing, not its skill."""
    import torch

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.config import ComponentConfig, unstructure
    from facerep.eval.saved import save_trained
    from facerep_landmarks.task import AlignmentParams, LandmarkAlignment

    torch.manual_seed(0)
    bp, tp = TimmBackboneParams(model="resnet10t"), AlignmentParams(input_size=size, head="regression", crop="image")
    backbone, task = TimmBackbone(bp), LandmarkAlignment(tp)
    head = task.build_head(backbone, None, linear=False, spec={"n_points": n_points})
    torch.nn.init.normal_(head.fc.weight, std=0.05)
    return save_trained(directory, backbone, head, backbone_cfg=ComponentConfig("core.timm", unstructure(bp)),
                        task_cfg=ComponentConfig("landmarks.alignment", unstructure(tp)), spec={"n_points": n_points}, linear=False)


def test_a_trained_landmarks_model_is_a_source_computed_once_and_cached(tmp_path, monkeypatch):
    from facerep.data.synthetic import SyntheticFaces
    from facerep_landmarks.trained import TrainedLandmarker

    model = _landmarks_model(tmp_path / "m")
    synthetic = {"name": "core.synthetic", "params": {"n": 10, "size": 48, "seed": 4}}
    params = LandmarkedParams(dataset=synthetic, source="model", path=str(model), cache_dir=str(tmp_path / "cache"))
    ds = LandmarkedDataset(params)
    faces = SyntheticFaces(n=10, size=48, seed=4)
    expected = TrainedLandmarker(model).predict([faces[i].image for i in range(10)])
    assert len(ds) == 10 and ds.report["with_landmarks"] == 10 and ds.report["source"].startswith("model-")
    np.testing.assert_allclose(np.stack([ds[i].landmarks for i in range(10)]), expected, atol=1e-5)
    assert np.array_equal(ds.flip_order, flip_order("68")) and len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("landmarks recomputed instead of read from the cache")

    monkeypatch.setattr("facerep_landmarks.trained.TrainedLandmarker.predict", refuse)
    np.testing.assert_array_equal(LandmarkedDataset(params)[3].landmarks, ds[3].landmarks)
    monkeypatch.undo()
    five = LandmarkedDataset(attrs.evolve(params, path=str(_landmarks_model(tmp_path / "five", n_points=5))))
    assert five.n_landmarks == 5 and np.array_equal(five.flip_order, flip_order("5"))
    with pytest.raises(ConfigError, match=r"data\.params\.path: source 'model' needs"):
        LandmarkedDataset(attrs.evolve(params, path=None))


def test_the_landmark_vit_runs_a_trained_landmarks_model_on_its_images(tmp_path):
    import torch

    from facerep_lafs.landmark_vit import LandmarkViT, LandmarkViTParams
    from facerep_landmarks.trained import TrainedLandmarker

    model = _landmarks_model(tmp_path / "m")
    torch.manual_seed(0)
    vit = LandmarkViT(attrs.evolve(LandmarkViTParams.tiny(), n_landmarks=68, landmarker={"source": "model", "path": str(model)})).eval()
    x = vit.preprocess(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    images = vit.unpreprocess(x).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with torch.no_grad():
        pts = vit.landmarks(x)
        np.testing.assert_allclose(pts.numpy(), TrainedLandmarker(model).predict(list(images)), atol=1e-5)
        torch.testing.assert_close(vit(x).pooled, vit.forward_points(x, pts).pooled)
    with pytest.raises(ConfigError, match=r"unknown keys \['upsample'\] for source model"):
        LandmarkViT(attrs.evolve(LandmarkViTParams.tiny(), landmarker={"source": "model", "path": str(model), "upsample": 1})).landmarks(x)
