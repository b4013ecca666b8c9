"""CelebA files that are not UTF-8 text: one DataError naming file and line; the files are left as they were."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_attributes.celeba import CelebA, CelebAParams, read_pairs_file


def test_non_utf8_attribute_file_names_file_and_line_and_is_left_unchanged(tmp_path):
    (tmp_path / "img_align_celeba").mkdir()
    for name in ("000001.jpg", "000002.jpg"):
        cv2.imwrite(str(tmp_path / "img_align_celeba" / name), np.zeros((12, 10, 3), np.uint8))
    attr = tmp_path / "list_attr_celeba.txt"
    raw = b"2\nSmiling Male\xe9 \n000001.jpg  1 -1\n000002.jpg -1  1\n"  # Latin-1 e-acute in the names line
    attr.write_bytes(raw)
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt: line 2: not UTF-8 text \(byte 0xe9 at offset 14\)"):
        CelebA(CelebAParams(root=str(tmp_path)))
    assert attr.read_bytes() == raw
    attr.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\xe9", b""))  # a UTF-8 BOM is fine
    assert CelebA(CelebAParams(root=str(tmp_path))).info.class_names["attributes"] == ("Smiling", "Male")
    ids = tmp_path / "identity_CelebA.txt"
    ids.write_bytes(b"000001.jpg 5\n000002.jpg \xff9\n")
    with pytest.raises(DataError, match=r"identity_CelebA\.txt: line 2: not UTF-8"):
        read_pairs_file(ids, "identity")
    assert ids.read_bytes() == b"000001.jpg 5\n000002.jpg \xff9\n"
