"""AU readers on fixtures in the release formats, F1 and ICC(3,1) by hand, both tasks end to end."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_action_units.metrics import au_f1, icc_3_1, intensity_metrics
from facerep_action_units.readers import BP4D, BP4D_AUS, DISFA, DISFA_AUS, BP4DParams, DISFAParams, read_bp4d_csv, read_disfa_au


def _disfa(root, subject="SN001", frames=6, seed=0):
    rng = np.random.default_rng(seed)
    lab = root / "ActionUnit_Labels" / subject
    lab.mkdir(parents=True)
    values = rng.integers(0, 6, size=(frames, len(DISFA_AUS)))
    for j, k in enumerate(DISFA_AUS):
        (lab / f"{subject}_au{k}.txt").write_text("".join(f"{f + 1},{values[f, j]}\n" for f in range(frames)))
    img = root / "Images" / subject
    img.mkdir(parents=True)
    for f in range(frames):
        cv2.imwrite(str(img / f"{f + 1}.jpg"), np.full((24, 24, 3), 20 * values[f, 6], np.uint8))  # brightness follows AU12
    return values


def test_disfa_reads_intensities_and_occurrences(tmp_path):
    values = _disfa(tmp_path)
    ds = DISFA(DISFAParams(root=str(tmp_path)))
    assert len(ds) == 6 and ds.info.class_names["aus"][6] == "AU12"
    np.testing.assert_array_equal(ds.label_array("aus"), values)
    assert ds[2].aus.tolist() == values[2].tolist() and ds[2].meta["path"].endswith("Images/SN001/3.jpg")
    occ = DISFA(DISFAParams(root=str(tmp_path), mode="occurrence"))
    np.testing.assert_array_equal(occ.aus, values >= 2)


def test_disfa_errors_name_file_and_line(tmp_path):
    f = tmp_path / "SN001_au1.txt"
    f.write_text("1,0\n2,7\n")
    with pytest.raises(DataError, match=r"SN001_au1.txt:2: AU intensity must be 0-5, got 7"):
        read_disfa_au(f)
    f.write_text("1;0\n")
    with pytest.raises(DataError, match=r"SN001_au1.txt:1: expected 'frame,intensity'"):
        read_disfa_au(f)


def test_bp4d_csv_occurrences_with_unknowns(tmp_path):
    header = ",".join(["0"] + [str(i) for i in range(1, 40)])
    rows = []
    for frame in (1, 2, 3):
        vals = [0] * 39
        vals[0], vals[11] = 1, 9 if frame == 2 else 0  # AU1 on; AU12 not coded in frame 2
        rows.append(",".join([str(frame)] + [str(v) for v in vals]))
    (tmp_path / "AUCoding" / "AU_OCC").mkdir(parents=True)
    csv = tmp_path / "AUCoding" / "AU_OCC" / "F001_T1.csv"
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    frames, occ = read_bp4d_csv(csv)
    assert frames.tolist() == [1, 2, 3] and occ.shape == (3, 12)
    assert occ[:, BP4D_AUS.index(1)].tolist() == [1, 1, 1] and occ[:, BP4D_AUS.index(12)].tolist() == [0, -1, 0]
    ds = BP4D(BP4DParams(root=str(tmp_path)))
    assert len(ds) == 3 and str(ds.files[1]).endswith("images/F001/T1/0002.jpg")
    csv.write_text(header + "\n" + rows[0].replace("1,", "5,", 2) + "\n")
    with pytest.raises(DataError, match=r"F001_T1.csv:2: AU occurrence values must be 0, 1 or 9, got \[5\]"):
        read_bp4d_csv(csv)


def test_f1_ignores_unknowns_and_icc_matches_a_hand_anova():
    gt = np.array([[1, 0], [1, -1], [0, 1], [0, 1]])
    pred = np.array([[1, 1], [0, 1], [1, 1], [0, 0]])
    m = au_f1(pred, gt, ("a", "b"))
    assert m["f1_a"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1)) and m["f1_b"] == pytest.approx(2 * 1 / (2 + 1 + 1))
    # ICC(3,1) by hand for ratings x = (1, 2, 3, 4), y = (2, 2, 4, 5): row means 1.5 2 3.5 4.5, grand
    # 2.875, BMS = 2 * 5.6875 / 3; column means 2.5 / 3.25, residuals +-0.125 (x3) and +-0.375,
    # EMS = 0.375 / 3 = 0.125; ICC = (BMS - EMS) / (BMS + EMS) = 0.93617...
    x, y = np.array([1.0, 2, 3, 4]), np.array([2.0, 2, 4, 5])
    bms, ems = 2 * 5.6875 / 3, 0.125
    assert icc_3_1(x, y) == pytest.approx((bms - ems) / (bms + ems)) == pytest.approx(0.936170, abs=1e-6)
    assert icc_3_1(x, x + 3) == pytest.approx(1.0)  # consistency: a constant offset is agreement
    assert icc_3_1(x, x[::-1]) < 0
    out = intensity_metrics(np.stack([x, x], 1), np.stack([x, y], 1), ("p", "q"))
    assert out["icc_p"] == pytest.approx(1.0) and out["mse_q"] == pytest.approx(((x - y) ** 2).mean())


@pytest.mark.parametrize("task_name", ["detection", "intensity"])
def test_tasks_train_a_frozen_head_on_disfa_fixtures(tmp_path, task_name):
    import torch

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.eval.protocols import FrozenHead, FrozenHeadParams
    from facerep_action_units.task import AUDetection, AUIntensity, AUParams

    _disfa(tmp_path / "a", frames=24, seed=1)
    _disfa(tmp_path / "b", frames=12, seed=2)
    mode = "occurrence" if task_name == "detection" else "intensity"
    train = DISFA(DISFAParams(root=str(tmp_path / "a"), mode=mode))
    test = DISFA(DISFAParams(root=str(tmp_path / "b"), mode=mode, split="test"))
    task = (AUDetection if task_name == "detection" else AUIntensity)(AUParams(input_size=32, head="linear"))
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model="resnet10t"))
    out = FrozenHead(FrozenHeadParams(epochs=30, min_steps=0, batch_size=8, lr=1e-2)).run(bb, task, train, test)
    assert out.history[-1]["loss"] < out.history[0]["loss"]
    key = "mean_f1" if task_name == "detection" else "mean_icc"
    assert task.primary_metric == key and np.isfinite(out.metrics[key])
    assert ("f1_AU12" if task_name == "detection" else "icc_AU12") in out.metrics


def _labelled(aus: np.ndarray):
    """A dataset stand-in whose samples carry only the AU rows ``aus`` (what ``label_array`` reads)."""

    class _DS:
        info = type("I", (), {"name": "toy", "class_names": {}})()

        def __len__(self):
            return len(aus)

        def __getitem__(self, i):
            return type("S", (), {"label": lambda self, k: aus[i]})()

    return _DS()


def test_detection_outcomes_reproduce_mean_f1_with_unknowns_and_an_empty_au():
    """Per image and AU: 2 TP over predicted + present; summed over images they give ``au_f1``'s F1,
    unknown (-1) entries counting in neither, an AU never predicted nor present scoring 0."""
    from facerep_action_units.task import AUDetection, AUParams

    rng = np.random.default_rng(3)
    gt = rng.integers(-1, 2, (30, 4))
    gt[:, 3] = 0  # never present
    pred = rng.integers(0, 2, (30, 4)).astype(np.int8)
    pred[:, 3] = 0  # never predicted: F1 0 in au_f1

    task = AUDetection(AUParams(input_size=32))
    want = au_f1(pred, gt, tuple(f"AU{j}" for j in range(4)))["mean_f1"]
    got = task.outcomes(list(pred), _labelled(gt)).metric()
    assert got == pytest.approx(want, abs=1e-12) and want > 0


def test_intensity_outcomes_reproduce_mean_icc():
    """Per image and AU the moment terms of ICC(3,1): their statistic, averaged over AUs, is ``mean_icc``."""
    from facerep_action_units.metrics import intensity_metrics
    from facerep_action_units.task import AUIntensity, AUParams

    rng = np.random.default_rng(4)
    gt = rng.integers(0, 6, (40, 3)).astype(np.float64)
    pred = (0.6 * gt + rng.normal(0, 1, (40, 3))).astype(np.float32)

    want = intensity_metrics(pred.astype(np.float64), gt, ("a", "b", "c"))["mean_icc"]
    got = AUIntensity(AUParams(input_size=32)).outcomes(list(pred), _labelled(gt))
    assert got.metric() == pytest.approx(want, abs=1e-9) and 0 < want < 1 and got.statistic == "icc_3_1"
