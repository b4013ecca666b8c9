"""WFLW and AFLW-19 lists on fixtures in their release formats; box-normalised NME uses their boxes."""

from __future__ import annotations

import numpy as np
import pytest

from facerep.errors import DataError
from facerep_landmarks.lists import AFLW19, WFLW, AFLW19Params, WFLWParams
from facerep_landmarks.metrics import landmark_metrics


def test_wflw_lines_with_subsets(tmp_path):
    pts = np.arange(196, dtype=float)
    line = lambda flags, name: " ".join([*(f"{v:.3f}" for v in pts), "10", "20", "110", "140", *map(str, flags), name])
    lst = tmp_path / "list.txt"
    lst.write_text(line([0, 1, 0, 0, 0, 0], "1--Handshaking/a.jpg") + "\n" + line([1, 0, 0, 0, 0, 0], "2--Demo/b.jpg") + "\n")
    ds = WFLW(WFLWParams(root=str(tmp_path), list="list.txt"))
    assert len(ds) == 2 and ds.landmarks.shape == (2, 98, 2) and ds.landmarks[0, 1].tolist() == [2.0, 3.0]
    assert ds.metas[0]["expression"] == 1 and ds.boxes()[0].tolist() == [10, 20, 110, 140] and ds.info.landmark_scheme == "98"
    assert str(ds.files[1]).endswith("WFLW_images/2--Demo/b.jpg")
    assert len(WFLW(WFLWParams(root=str(tmp_path), list="list.txt", subset="pose"))) == 1
    lst.write_text(" ".join(["1"] * 50) + "\n")
    with pytest.raises(DataError, match=r"list.txt:1: expected 196 coordinates, 4 box values, 6 flags and a path, got 50 fields"):
        WFLW(WFLWParams(root=str(tmp_path), list="list.txt"))


def test_aflw19_csv_box_and_box_normalised_nme(tmp_path):
    header = ["image_name", "scale", "center_w", "center_h"] + [f"original_{i}_{a}" for i in range(19) for a in "xy"]
    coords = [str(float(v)) for v in range(38)]
    (tmp_path / "aflw.csv").write_text(",".join(header) + "\n" + ",".join(["0/a.jpg", "0.5", "100", "80", *coords]) + "\n")
    ds = AFLW19(AFLW19Params(root=str(tmp_path), list="aflw.csv"))
    assert ds.landmarks.shape == (1, 19, 2) and ds.landmarks[0, 2].tolist() == [4.0, 5.0]
    assert ds.boxes()[0].tolist() == [50.0, 30.0, 150.0, 130.0]  # side = scale * 200
    gt = ds.landmarks.astype(float)
    m = landmark_metrics(gt + np.array([3.0, 4.0]), gt, "19", 0.07, "box", ds.boxes())
    assert m["nme_box"] == pytest.approx(5.0 / 100) and m["nme_diagonal"] == pytest.approx(5.0 / (100 * np.sqrt(2)))
    (tmp_path / "aflw.csv").write_text("image_name,scale\n")
    with pytest.raises(DataError, match=r"aflw.csv:1: header lacks"):
        AFLW19(AFLW19Params(root=str(tmp_path), list="aflw.csv"))
