"""Landmark files that are not UTF-8 text: one DataError naming file and line; the files are left as they were."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_landmarks.lists import AFLW19, AFLW19Params
from facerep_landmarks.readers import MTFL, MTFLParams, PtsFolder, PtsFolderParams, read_pts


def _pts_bytes(n: int = 3) -> bytes:
    return (b"version: 1\nn_points: %d\n{\n" % n) + b"".join(b"%d %d\n" % (k + 1, k + 2) for k in range(n)) + b"}\n"


def test_non_utf8_pts_file_names_file_and_line_and_is_left_unchanged(tmp_path):
    cv2.imwrite(str(tmp_path / "face.jpg"), np.zeros((8, 8, 3), np.uint8))
    pts = tmp_path / "face.pts"
    raw = _pts_bytes().replace(b"2 3\n", b"2 \xb33\n")  # line 5
    pts.write_bytes(raw)
    with pytest.raises(DataError, match=r"face\.pts: line 5: not UTF-8 text \(byte 0xb3"):
        read_pts(pts, 3)
    with pytest.raises(DataError, match=r"face\.pts: line 5"):
        PtsFolder(PtsFolderParams(root=str(tmp_path), points=3))
    with pytest.raises(DataError, match=r"every one of the 1 \.pts files was skipped, first: .*face\.pts: line 5"):
        PtsFolder(PtsFolderParams(root=str(tmp_path), points=3, on_error="skip"))
    assert pts.read_bytes() == raw
    pts.write_bytes(b"\xef\xbb\xbf" + _pts_bytes())  # BOM accepted
    assert read_pts(pts, 3).tolist() == [[0, 1], [1, 2], [2, 3]]


def test_non_utf8_mtfl_list_and_aflw_csv(tmp_path):
    lst = tmp_path / "training.txt"
    raw = b" lfw_5590\\a.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n \xc0b.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n"
    lst.write_bytes(raw)
    with pytest.raises(DataError, match=r"training\.txt: line 2: not UTF-8 text \(byte 0xc0"):
        MTFL(MTFLParams(root=str(tmp_path)))
    assert lst.read_bytes() == raw
    csv_file = tmp_path / "face_landmarks_aflw_train.csv"
    head = ",".join(["image_name", "scale", "center_w", "center_h"] + [f"original_{i}_{a}" for i in range(19) for a in "xy"])
    raw = (head + "\n").encode() + b"\xff.jpg," + b",".join([b"1"] * 41) + b"\n"
    csv_file.write_bytes(raw)
    with pytest.raises(DataError, match=r"face_landmarks_aflw_train\.csv: line 2: not UTF-8"):
        AFLW19(AFLW19Params(root=str(tmp_path)))
    csv_file.write_bytes((head + "\n").encode())
    with pytest.raises(DataError, match=r"face_landmarks_aflw_train\.csv: no faces"):
        AFLW19(AFLW19Params(root=str(tmp_path)))
