"""The 3D alignment task: readers on fixtures in the released .mat layouts (values exact, errors
naming file and key), NME by yaw bin against hand-computed values, the crop round trip in 3D, the
masked loss, and the task contract (prepare, head, every protocol)."""

from __future__ import annotations

from typing import ClassVar

import _face3d_fixtures as fx
import numpy as np
import pytest
import torch
from scipy.io import savemat

from facerep.errors import DataError
from facerep.testing import TaskContract
from facerep.types import Sample
from facerep_face3d.metrics import face3d_metrics, yaw_bin
from facerep_face3d.readers import AFLW2000, W300LP, AFLW2000Params, W300LPParams
from facerep_face3d.task import Face3DAlignment, Face3DParams, masked_point_loss


def test_aflw2000_reader_gives_zero_based_points_depth_and_pose(tmp_path):
    root = fx.write_aflw2000(tmp_path / "aflw2000")
    ds = AFLW2000(AFLW2000Params(root=str(root)))
    faces = fx.SyntheticFaces(n=6, size=64, seed=7)
    assert len(ds) == 6 and ds.info.landmark_scheme == "68"
    s = ds[2]
    np.testing.assert_allclose(s.landmarks, faces[2].landmarks, atol=1e-5)  # 1-based in the file
    np.testing.assert_allclose(s.meta["points3d"][:, 2], fx.depth(faces[2].landmarks), rtol=1e-6)
    assert s.meta["yaw_deg"] == pytest.approx(45.0) and s.meta["pose"][0] == pytest.approx(0.1)
    assert s.meta["shape_para"].shape == (199,) and s.meta["exp_para"].shape == (29,)
    np.testing.assert_allclose(ds.label_array("yaw_deg"), fx.YAWS, rtol=1e-6)
    assert ds.label_array("points3d").shape == (6, 68, 3)


def test_bad_mat_files_are_named_or_skipped(tmp_path):
    root = fx.write_aflw2000(tmp_path / "aflw2000")
    savemat(str(root / "image00001.mat"), {"Pose_Para": np.zeros((1, 7))})  # no pt3d_68
    with pytest.raises(DataError, match=r"image00001\.mat: no pt3d_68 \(it holds Pose_Para\)"):
        AFLW2000(AFLW2000Params(root=str(root)))
    savemat(str(root / "image00001.mat"), {"pt3d_68": np.zeros((2, 68)), "Pose_Para": np.zeros((1, 7))})
    with pytest.raises(DataError, match=r"image00001\.mat: pt3d_68 has shape \(2, 68\), expected \(3, 68\)"):
        AFLW2000(AFLW2000Params(root=str(root)))
    (root / "image00003.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    skipped = AFLW2000(AFLW2000Params(root=str(root), on_error="skip"))
    assert len(skipped) == 4 and skipped.skipped == 2 and "image00003.mat: not a readable MATLAB .mat file" in skipped.problems[1]


def test_300w_lp_reader_takes_the_projected_3d_landmarks_and_leaves_depth_unknown(tmp_path):
    root = fx.write_300w_lp(tmp_path / "300W_LP")
    ds = W300LP(W300LPParams(root=str(root), subsets=("AFW", "HELEN")))
    faces = fx.SyntheticFaces(n=4, size=64, seed=8)
    assert len(ds) == 4 and [ds[i].meta["subset"] for i in range(4)] == ["AFW", "AFW", "HELEN", "HELEN"]
    np.testing.assert_allclose(ds[1].landmarks, faces[2].landmarks, atol=1e-5)  # AFW_102: the third face
    assert np.isnan(ds[0].meta["points3d"][:, 2]).all() and ds[0].meta["shape_para"].sum() == 199
    (root / "landmarks" / "HELEN" / "HELEN_103_1_0_pts.mat").unlink()
    with pytest.raises(DataError, match=r"HELEN_103_1_0\.mat: its landmarks file is missing"):
        W300LP(W300LPParams(root=str(root), subsets=("AFW", "HELEN")))
    with pytest.raises(DataError, match=r"300W-LP subset folder not found: .*IBUG"):
        W300LP(W300LPParams(root=str(root)))


def test_nme_by_yaw_bin_by_hand():
    gt = np.zeros((4, 68, 3))
    gt[:, :, 0] = np.linspace(0, 40, 68)  # box 40 wide ...
    gt[:, :, 1] = np.linspace(0, 10, 68)  # ... and 10 high: sqrt(w h) = 20
    pred = gt.copy()
    pred[0, :, 0] += 2.0  # face 0: every point 2 px off -> 0.1
    pred[1, :34, 1] += 4.0  # face 1: half the points 4 px off -> 0.1
    pred[2, :, :2] += 3.0  # face 2: (3, 3) off -> 3 sqrt(2) / 20
    pred[3, :, 2] += 50.0  # face 3: depth only, a constant: no 2D error, none after centring
    yaw = np.array([10.0, -25.0, 59.0, 120.0])
    m = face3d_metrics(pred, gt, yaw)
    assert list(yaw_bin(yaw)) == [0, 0, 1, 2]
    assert m["nme_yaw_0_30"] == pytest.approx(0.1) and m["n_yaw_0_30"] == 2
    assert m["nme_yaw_30_60"] == pytest.approx(3 * np.sqrt(2) / 20)
    assert m["nme_yaw_60_90"] == pytest.approx(0.0)
    assert m["nme_mean"] == pytest.approx((0.1 + 3 * np.sqrt(2) / 20 + 0.0) / 3)
    assert m["nme_all"] == pytest.approx((0.1 + 0.1 + 3 * np.sqrt(2) / 20) / 4)
    assert m["nme_3d"] == pytest.approx(m["nme_all"])  # the constant depth offset vanishes with centring


def test_crop_targets_map_back_to_the_3d_points_and_unknown_depth_is_not_a_loss():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(40, 160, (68, 2)), rng.uniform(-30, 30, (68, 1))], 1)
    s = Sample(image=np.zeros((200, 220, 3), np.uint8), landmarks=pts[:, :2].astype(np.float32), meta={"points3d": pts})
    task = Face3DAlignment(Face3DParams(input_size=64))
    for train in (False, True):
        prep = task.prepare(s, train=train, rng=np.random.default_rng(3))
        back = task.predict([torch.from_numpy(prep.target["points"][None])], [prep.meta])[0]
        np.testing.assert_allclose(back[:, :2], pts[:, :2], atol=1e-3)
        np.testing.assert_allclose(back[:, 2], pts[:, 2] - pts[:, 2].mean(), atol=1e-3)  # relative depth, image units
    pred = torch.zeros(1, 2, 3)
    target = torch.tensor([[[3.0, 4.0, float("nan")], [0.0, 0.0, 2.0]]])
    assert float(masked_point_loss(pred, target)) == pytest.approx((5.0 + 2.0) / 2)


class _With3D:
    """Synthetic faces with the meta a 3D reader gives: depth and yaw (two faces per bin)."""

    def __init__(self, dataset):
        self.dataset, self.info = dataset, dataset.info

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Sample:
        s = self.dataset[i]
        s.meta.update(points3d=np.concatenate([s.landmarks, fx.depth(s.landmarks)[:, None]], 1), yaw_deg=fx.YAWS[i % len(fx.YAWS)])
        return s


class TestFace3DContract(TaskContract):
    component = "face3d.alignment"
    params: ClassVar[dict] = {"input_size": 32, "hidden": 64}

    def dataset(self, split: str, n: int):
        return _With3D(super().dataset(split, n))


def _basis(path, n: int = 120, ks: int = 5, ke: int = 3):
    rng = np.random.default_rng(0)
    np.savez(path, mean=rng.normal(0, 50, (n, 3)), shape=rng.normal(0, 5, (n, 3, ks)), expression=rng.normal(0, 3, (n, 3, ke)),
             keypoints=rng.choice(n, 68, replace=False))
    return path


def test_rotation_is_pitch_yaw_roll_in_3ddfas_order():
    from facerep_face3d.morphable import rotation_matrix

    r = rotation_matrix(torch.tensor([[0.0, np.pi / 2, 0.0]]))[0]
    torch.testing.assert_close(r @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, -1.0]), atol=1e-6, rtol=0)  # yaw 90: x -> -z
    a = torch.tensor([[0.3, -0.7, 1.1]])
    rx, ry, rz = (rotation_matrix(torch.tensor([[v if i == j else 0.0 for j in range(3)]])) for i, v in enumerate(a[0].tolist()))
    torch.testing.assert_close(rotation_matrix(a), rx @ ry @ rz)
    torch.testing.assert_close(rotation_matrix(a)[0] @ rotation_matrix(a)[0].T, torch.eye(3), atol=1e-6, rtol=0)


def test_morphable_head_projects_parameters_and_can_fit_landmarks_the_basis_makes(tmp_path):
    from facerep_face3d.morphable import MorphableBasis, MorphableHead

    path = _basis(tmp_path / "basis.npz")
    basis = MorphableBasis(path)
    mean = basis.mean
    assert float((mean.max(0).values - mean.min(0).values)[:2].max()) == pytest.approx(1.0)  # normalised landmark box
    zero = torch.zeros(1, 5), torch.zeros(1, 3)
    pose = torch.tensor([[0.0, 0.0, 0.0, np.log(0.5), 0.4, 0.6]], dtype=torch.float32)
    expected = 0.5 * mean * torch.tensor([1.0, -1.0, 1.0]) + torch.tensor([0.4, 0.6, 0.0])
    torch.testing.assert_close(basis.landmarks(*zero, pose)[0], expected)
    task = Face3DAlignment(Face3DParams(input_size=32, basis=str(path), hidden=None))
    head = task.build_head(type("B", (), {"embed_dim": 4})(), None, linear=True, spec={"n_points": 68})
    assert isinstance(head, MorphableHead)
    true_pose = torch.tensor([[0.2, -0.4, 0.1, np.log(0.7), 0.5, 0.45]], dtype=torch.float32)
    target = basis.landmarks(torch.randn(1, 5) * 0.5, torch.randn(1, 3) * 0.5, true_pose)
    target = torch.cat([target[..., :2], target[..., 2:] - target[..., 2:].mean(1, keepdim=True)], -1)
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    first = None
    for _ in range(400):  # a constant input: only the bias can move, i.e. the parameters themselves
        loss = head.loss(head({"pooled": torch.zeros(1, 4)}), {"points": target}).loss
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05 * first, (first, float(loss.detach()))
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros((10, 3)), shape=np.zeros((10, 3, 2)), expression=np.zeros((10, 3, 1)), keypoints=np.arange(68))
    with pytest.raises(DataError, match=r"bad\.npz: keypoints must be 68 vertex indices below 10"):
        MorphableBasis(bad)


def test_self_distillation_relabels_a_face_with_the_teachers_3d_points():
    task = Face3DAlignment(Face3DParams(input_size=32))
    s = _With3D(fx.SyntheticFaces(n=2, size=64, seed=3))[0]
    pred = s.meta["points3d"] + np.array([1.0, -2.0, 5.0])
    out = task.pseudo_label(s, pred)
    np.testing.assert_allclose(out.landmarks, pred[:, :2], atol=1e-5)
    prep = task.prepare(out, train=False, rng=np.random.default_rng(0))
    back = task.predict([torch.from_numpy(prep.target["points"][None])], [prep.meta])[0]
    np.testing.assert_allclose(back[:, :2], pred[:, :2], atol=1e-3)  # trains on the teacher's points, not the annotation


def test_task_scores_an_aflw2000_fixture_by_yaw_bin(tmp_path):
    ds = AFLW2000(AFLW2000Params(root=str(fx.write_aflw2000(tmp_path / "aflw2000"))))
    task = Face3DAlignment(Face3DParams(input_size=32))
    gt = ds.label_array("points3d").astype(np.float64)
    lo, hi = gt[..., :2].min(1), gt[..., :2].max(1)
    size = np.sqrt(np.prod(hi - lo, 1))  # sqrt(w h) of each face's landmark box
    shifts = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # px along x, face i; yaws 5, -20 | 45, -50 | 75, -95
    preds = [g + np.array([d, 0.0, 0.0]) for g, d in zip(gt, shifts, strict=True)]
    m = task.evaluate(preds, ds)
    per_face = shifts / size
    assert m["nme_yaw_0_30"] == pytest.approx(per_face[:2].mean()) and m["nme_yaw_30_60"] == pytest.approx(per_face[2:4].mean())
    assert m["nme_yaw_60_90"] == pytest.approx(per_face[4:].mean())  # |-95| counts in the last bin
    assert m["nme_mean"] == pytest.approx(np.mean([per_face[:2].mean(), per_face[2:4].mean(), per_face[4:].mean()]))
    assert m["nme_3d"] == pytest.approx(m["nme_all"])
