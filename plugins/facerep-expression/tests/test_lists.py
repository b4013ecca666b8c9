"""RAF-DB and AffectNet lists on fixtures written in the release formats."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_expression.lists import RAFDB, AffectNet, AffectNetParams, RAFDBParams


def test_rafdb_splits_by_prefix_and_shifts_labels_to_zero_based(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "Image" / "aligned").mkdir(parents=True)
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 5\ntest_0001.jpg 7\ntrain_00002.jpg 1\n")
    for stem in ("train_00001", "test_0001", "train_00002"):
        cv2.imwrite(str(tmp_path / "Image" / "aligned" / f"{stem}_aligned.jpg"), np.zeros((10, 10, 3), np.uint8))
    train = RAFDB(RAFDBParams(root=str(tmp_path)))
    assert train.label_array("expression").tolist() == [4, 0] and train.info.class_names["expression"][4] == "sadness"
    assert train[0].meta["path"].endswith("train_00001_aligned.jpg")
    test = RAFDB(RAFDBParams(root=str(tmp_path), split="test"))
    assert len(test) == 1 and test.labels[0] == 6
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 5\ntrain_00002.jpg 8\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt:2: expected '<name>.jpg <label 1-7>'"):
        RAFDB(RAFDBParams(root=str(tmp_path)))


def test_affectnet_crops_faces_and_drops_non_expressions(tmp_path):
    (tmp_path / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    img = np.zeros((40, 50, 3), np.uint8)
    img[5:25, 10:30] = 200
    cv2.imwrite(str(tmp_path / "Manually_Annotated_Images" / "1" / "a.png"), img)
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    rows = ["1/a.png,10,5,20,20,\"1;2\",1,0.5,-0.25", "1/a.png,0,0,10,10,\"\",7,0,0", "1/a.png,0,0,10,10,\"\",9,0,0"]
    (tmp_path / "training.csv").write_text(head + "\n".join(rows) + "\n")
    ds8 = AffectNet(AffectNetParams(root=str(tmp_path)))
    ds7 = AffectNet(AffectNetParams(root=str(tmp_path), num_classes=7))
    assert len(ds8) == 2 and len(ds7) == 1  # "Uncertain" (9) always out, contempt (7) out for 7 classes
    s = ds8[0]
    assert s.image.shape == (20, 20, 3) and s.image.mean() == pytest.approx(200, abs=2) and s.meta["arousal"] == -0.25
    (tmp_path / "training.csv").write_text(head + "1/a.png,x,5,20,20,\"\",1,0,0\n")
    with pytest.raises(DataError, match=r"training.csv:2: malformed row"):
        AffectNet(AffectNetParams(root=str(tmp_path)))
