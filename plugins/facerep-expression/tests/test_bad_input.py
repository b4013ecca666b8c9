"""FER2013 / RAF-DB / AffectNet lists with bad bytes or codes: one DataError naming file and line;
the files are left as they were."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_expression.fer2013 import FER2013, FER2013Params, read_fer_csv
from facerep_expression.lists import RAFDB, AffectNet, AffectNetParams, RAFDBParams

AFFECTNET_HEAD = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"


def test_non_utf8_fer2013_csv_names_file_and_line_and_is_left_unchanged(tmp_path):
    px = " ".join(["128"] * 2304)
    csv_file = tmp_path / "fer2013.csv"
    raw = f"emotion,pixels,Usage\n3,{px},Training\n".encode() + b"4,\xa0" + px.encode() + b",Training\n"
    csv_file.write_bytes(raw)
    with pytest.raises(DataError, match=r"fer2013\.csv: line 3: not UTF-8 text \(byte 0xa0"):
        read_fer_csv(csv_file, "Training")
    with pytest.raises(DataError, match=r"fer2013\.csv: line 3"):
        FER2013(FER2013Params(root=str(csv_file), format="csv"))
    assert csv_file.read_bytes() == raw
    csv_file.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\xa0", b"").replace(b"\n", b"\r\n"))  # BOM + CRLF are fine
    images, labels = read_fer_csv(csv_file, "Training")
    assert images.shape == (2, 48, 48) and labels.tolist() == [3, 4]


def test_non_utf8_rafdb_list(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    lst = tmp_path / "EmoLabel" / "list_patition_label.txt"
    lst.write_bytes(b"train_00001.jpg 5\ntrain_\xff0002.jpg 1\n")
    with pytest.raises(DataError, match=r"list_patition_label\.txt: line 2: not UTF-8"):
        RAFDB(RAFDBParams(root=str(tmp_path)))
    assert lst.read_bytes() == b"train_00001.jpg 5\ntrain_\xff0002.jpg 1\n"


@pytest.mark.parametrize("code", ["-1", "11", "abc", ""])
def test_affectnet_code_that_is_not_an_affectnet_code_names_file_line_and_valid_codes(tmp_path, code):
    (tmp_path / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "Manually_Annotated_Images" / "1" / "a.png"), np.zeros((20, 20, 3), np.uint8))
    rows = ['1/a.png,0,0,10,10,"",1,0.5,0.5', '1/a.png,0,0,10,10,"",9,0,0', f'1/a.png,0,0,10,10,"",{code},0,0']
    csv_file = tmp_path / "training.csv"
    raw = (AFFECTNET_HEAD + "\n".join(rows) + "\n").encode()
    csv_file.write_bytes(raw)
    with pytest.raises(DataError, match=rf"training\.csv:4: expression '{code}' is not an AffectNet code; expected 0-10 "
                                        r"\(0 neutral, .*7 contempt, 8 none, 9 uncertain, 10 no-face; 8-10 are left out\)"):
        AffectNet(AffectNetParams(root=str(tmp_path)))
    assert csv_file.read_bytes() == raw


def test_affectnet_documented_non_expressions_stay_dropped(tmp_path):
    (tmp_path / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "Manually_Annotated_Images" / "1" / "a.png"), np.zeros((20, 20, 3), np.uint8))
    rows = [f'1/a.png,0,0,10,10,"",{c},0,0' for c in (0, 7, 8, 9, 10)]
    (tmp_path / "training.csv").write_text(AFFECTNET_HEAD + "\n".join(rows) + "\n")
    assert AffectNet(AffectNetParams(root=str(tmp_path))).labels.tolist() == [0, 7]
    assert AffectNet(AffectNetParams(root=str(tmp_path), num_classes=7)).labels.tolist() == [0]
    (tmp_path / "training.csv").write_bytes(AFFECTNET_HEAD.encode() + b'1/\xe4.png,0,0,10,10,"",1,0,0\n')
    with pytest.raises(DataError, match=r"training\.csv: line 2: not UTF-8"):
        AffectNet(AffectNetParams(root=str(tmp_path)))
