"""UTKFace file names: real count, parsed labels, malformed names."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerep.data.folder import expand_path
from facerep.errors import DataError
from facerep_attributes.utkface import UTKFace, UTKFaceParams, parse_name

UTK = expand_path("${FACEREP_DATA}/utkface")


@pytest.mark.realdata
@pytest.mark.skipif(not UTK.is_dir(), reason="needs ../shared/data/utkface (or $FACEREP_DATA)")
def test_real_utkface_has_4000_parsable_faces():
    ds = UTKFace()
    assert len(ds) == 4000 and ds.skipped == 0
    first = sorted(UTK.iterdir())[0].name
    age, gender, _race = parse_name(first)
    s = ds[0]
    assert s.meta["age"] == age and s.attributes.tolist() == [gender] and s.image.shape == (200, 200, 3)
    assert 0.3 < ds.label_array("attributes").mean() < 0.7


def test_names_are_parsed_and_malformed_ones_named(tmp_path):
    for name in ("25_1_2_20170116.jpg.chip.jpg", "61_0_4_2017.jpg.chip.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    ds = UTKFace(UTKFaceParams(root=str(tmp_path)))
    assert ds.label_array("attributes").ravel().tolist() == [1, 0] and ds[1].meta["race"] == "others"
    cv2.imwrite(str(tmp_path / "39_1_20170116.jpg.chip.jpg"), np.zeros((8, 8, 3), np.uint8))  # race missing
    with pytest.raises(DataError, match=r"39_1_20170116\.jpg\.chip\.jpg: name is not <age>_<gender"):
        UTKFace(UTKFaceParams(root=str(tmp_path)))
    skipping = UTKFace(UTKFaceParams(root=str(tmp_path), on_error="skip"))
    assert len(skipping) == 2 and skipping.skipped == 1
