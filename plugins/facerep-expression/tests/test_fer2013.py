"""FER2013 in both formats: real counts, the original CSV format, errors naming file and line."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from facerep.data.folder import expand_path
from facerep.errors import DataError
from facerep_expression.fer2013 import CLASSES, FER2013, FER2013Params, read_fer_csv

FER = expand_path("${FACEREP_DATA}/fer2013")
needs_fer = pytest.mark.skipif(not (FER / "train").is_dir(), reason="needs ../shared/data/fer2013 (or $FACEREP_DATA)")


@pytest.mark.realdata
@needs_fer
def test_real_folder_export_counts_and_labels():
    train, test = FER2013(), FER2013(FER2013Params(split="test"))
    assert len(train) == 9776 and len(test) == 3589
    counts = dict(zip(CLASSES, np.bincount(train.label_array("expression"), minlength=7).tolist(), strict=True))
    assert counts == {"angry": 1358, "disgust": 138, "fear": 1390, "happy": 2495, "sad": 1664, "surprise": 1018, "neutral": 1713}
    s = train[0]
    assert s.image.shape == (48, 48, 3) and s.expression == 0 and "/angry/" in s.meta["path"]
    assert np.array_equal(s.image[..., 0], s.image[..., 2])  # grey as RGB


def _csv(path, rows):
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))
    return path


def test_original_csv_rows_by_usage(tmp_path):
    px = " ".join(str(i % 256) for i in range(2304))
    f = _csv(tmp_path / "fer2013.csv", [(3, px, "Training"), (6, px, "PublicTest"), (0, px, "Training"), (1, px, "PrivateTest")])
    train = FER2013(FER2013Params(root=str(f), format="csv"))
    assert len(train) == 2 and train.label_array("expression").tolist() == [3, 0]
    assert train[0].image.shape == (48, 48, 3) and train[0].image[0, 5, 1] == 5 and train[0].image[1, 0, 0] == 48
    assert len(FER2013(FER2013Params(root=str(f), format="csv", split="test"))) == 1
    assert FER2013(FER2013Params(root=str(f), format="csv", split="private_test")).labels.tolist() == [1]


@pytest.mark.parametrize(("row", "message"), [
    ("3,1 2 3,Training", ":2: expected 2304 pixel values"),
    ("9,{px},Training", ":2: emotion must be an integer 0-6, got '9'"),
    ("3,{px}", ":2: expected 3 fields"),
    ("3,a {px},Training", ":2: pixels must be integers"),
])
def test_malformed_csv_rows_name_file_and_line(tmp_path, row, message):
    px = " ".join(["7"] * 2304)
    f = tmp_path / "fer2013.csv"
    f.write_text("emotion,pixels,Usage\n" + row.format(px=px) + "\n")
    with pytest.raises(DataError, match=re.escape(f"fer2013.csv{message}")):
        read_fer_csv(f, "Training")
    f.write_text("label,pixels\n")
    with pytest.raises(DataError, match=r"fer2013\.csv:1: expected the header"):
        read_fer_csv(f, "Training")


def test_folder_export_rejects_unknown_classes_and_names_unreadable_images(tmp_path):
    for cls in ("happy", "Sad"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "train" / cls / "Training_1.jpg"), np.full((48, 48), 100, np.uint8))
    ds = FER2013(FER2013Params(root=str(tmp_path)))
    got = {f.parent.name: int(y) for f, y in zip(ds.files, ds.label_array("expression"), strict=True)}
    assert got == {"happy": 3, "Sad": 4}  # official label order, case-insensitive folder names
    (tmp_path / "train" / "happy" / "Training_2.jpg").write_bytes(b"broken")
    ds = FER2013(FER2013Params(root=str(tmp_path)))
    broken = next(i for i, f in enumerate(ds.files) if f.name == "Training_2.jpg")
    with pytest.raises(DataError, match=r"Training_2\.jpg"):
        ds[broken]
    skipping = FER2013(FER2013Params(root=str(tmp_path), on_error="skip"))
    assert skipping[broken].meta["path"] != str(ds.files[broken]) and skipping.skipped == 1
    (tmp_path / "train" / "smirk").mkdir()
    with pytest.raises(DataError, match="smirk: unknown FER2013 class folder"):
        FER2013(FER2013Params(root=str(tmp_path)))
