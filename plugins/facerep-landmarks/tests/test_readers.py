"""300-W .pts folders and MTFL lists: real counts, exact values from the files, errors naming file:line."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerep.data.folder import expand_path
from facerep.errors import DataError
from facerep_landmarks.readers import MTFL, MTFLParams, PtsFolder, PtsFolderParams, read_pts

DATA = expand_path("${FACEREP_DATA}")


def _pts(path, points, n_header=None):
    body = "\n".join(f"{x} {y}" for x, y in points)
    path.write_text(f"version: 1\nn_points: {n_header or len(points)}\n{{\n{body}\n}}\n")
    return path


@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "300w/afw").is_dir(), reason="needs ../shared/data/300w/afw (or $FACEREP_DATA)")
def test_afw_has_337_faces_with_68_zero_based_points():
    ds = PtsFolder()
    assert len(ds) == 337 and ds.landmarks.shape == (337, 68, 2) and ds.info.landmark_scheme == "68"
    first = sorted((DATA / "300w/afw").glob("*.pts"))[0]
    x, y = map(float, first.read_text().splitlines()[3].split())
    assert ds.landmarks[0, 0].tolist() == pytest.approx([x - 1, y - 1])
    s = ds[0]
    h, w = s.image.shape[:2]
    assert (s.landmarks >= -5).all() and (s.landmarks[:, 0] < w + 5).all() and (s.landmarks[:, 1] < h + 5).all()
    assert len(PtsFolder(PtsFolderParams(stop=237))) == 237 and len(PtsFolder(PtsFolderParams(start=237))) == 100


@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "mtfl/training.txt").is_file(), reason="needs ../shared/data/mtfl (or $FACEREP_DATA)")
def test_mtfl_has_2000_faces_with_5_points_and_attributes():
    ds = MTFL()
    assert len(ds) == 2000 and ds.landmarks.shape == (2000, 5, 2)
    # first line: " net_7876\0_0_0.jpg 152 247 210 162 236 148 149 195 238 236 1 1 2 3"
    assert ds.landmarks[0].tolist() == [[152, 148], [247, 149], [210, 195], [162, 238], [236, 236]]
    s = ds[0]
    assert s.meta["gender"] == 1 and s.meta["pose"] == 3 and s.meta["path"].endswith("net_7876/0_0_0.jpg")
    assert len(MTFL(MTFLParams(start=1600, split="test"))) == 400


def test_pts_parsing_and_malformed_files(tmp_path):
    pts = [(i + 1.5, 2 * i + 1.0) for i in range(68)]
    good = _pts(tmp_path / "a.pts", pts)
    np.testing.assert_allclose(read_pts(good, 68)[3], [3.5, 6.0])  # 1-based -> 0-based
    with pytest.raises(DataError, match=r"b.pts:2: expected 68 points, the file has 67"):
        read_pts(_pts(tmp_path / "b.pts", pts[:67]), 68)
    with pytest.raises(DataError, match=r"c.pts:\d+: the header says 68 points but 67 follow"):
        read_pts(_pts(tmp_path / "c.pts", pts[:67], n_header=68), 68)
    bad = _pts(tmp_path / "d.pts", pts).read_text().replace("4.5 7.0", "4.5 seven")
    (tmp_path / "d.pts").write_text(bad)
    with pytest.raises(DataError, match=r"d.pts:7: expected 'x y', got '4.5 seven'"):
        read_pts(tmp_path / "d.pts")


def test_folder_missing_image_raises_or_is_skipped_and_counted(tmp_path):
    pts = [(i + 1.0, i + 1.0) for i in range(68)]
    for name in ("a", "b", "c"):
        _pts(tmp_path / f"{name}.pts", pts if name != "c" else pts[:67])
        if name != "b":
            cv2.imwrite(str(tmp_path / f"{name}.jpg"), np.zeros((80, 80, 3), np.uint8))
    with pytest.raises(DataError, match=r"b\.pts: no image beside it"):
        PtsFolder(PtsFolderParams(root=str(tmp_path)))
    ds = PtsFolder(PtsFolderParams(root=str(tmp_path), on_error="skip"))
    assert len(ds) == 1 and ds.skipped == 2 and "c.pts:2: expected 68 points, the file has 67" in ds.problems[1]


def test_mtfl_list_errors_name_file_and_line(tmp_path):
    (tmp_path / "training.txt").write_text(" net\\1.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n net\\2.jpg 1 2 3\n")
    with pytest.raises(DataError, match=r"training.txt:2: expected a path, 10 coordinates and 4 attributes, got 4 fields"):
        MTFL(MTFLParams(root=str(tmp_path)))
    (tmp_path / "training.txt").write_text(" net\\1.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n")
    with pytest.raises(DataError, match=r"training.txt: image net/1.jpg is missing"):
        MTFL(MTFLParams(root=str(tmp_path)))
