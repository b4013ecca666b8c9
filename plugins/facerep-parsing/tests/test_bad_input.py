"""Parsing files that are bad (not UTF-8 landmarks, corrupt or absurd-size images and masks): one
DataError naming the file; the files are left as they were."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_parsing.celebamask import CelebAMaskHQ, CelebAMaskParams, read_index_mask, read_part_masks
from facerep_parsing.lapa import read_lapa_landmarks


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_non_utf8_lapa_landmarks(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"2\n1.0 2.0\n3.0 \x804.0\n")
    with pytest.raises(DataError, match=r"a\.txt: line 3: not UTF-8 text \(byte 0x80"):
        read_lapa_landmarks(f)
    assert f.read_bytes() == b"2\n1.0 2.0\n3.0 \x804.0\n"
    f.write_bytes(b"\n\n")
    with pytest.raises(DataError, match=r"a\.txt: empty"):
        read_lapa_landmarks(f)


def test_corrupt_and_absurd_masks_and_images(tmp_path):
    bomb = _png_claiming(100_000, 100_000)
    (tmp_path / "m.png").write_bytes(bomb)
    with pytest.raises(DataError, match=r"m\.png: image header claims 100000x100000 pixels"):
        read_index_mask(tmp_path / "m.png")
    (tmp_path / "m.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"m\.png: cannot read mask"):
        read_index_mask(tmp_path / "m.png")
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "00000_skin.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"00000_skin\.png: cannot decode image"):
        read_part_masks(tmp_path, 0)
    (tmp_path / "0" / "00000_skin.png").write_bytes(bomb)
    with pytest.raises(DataError, match=r"00000_skin\.png: image header claims"):
        read_part_masks(tmp_path, 0)
    assert (tmp_path / "0" / "00000_skin.png").read_bytes() == bomb
    root = tmp_path / "hq"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    cv2.imwrite(str(root / "masks" / "1.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"1\.jpg: cannot decode image"):
        CelebAMaskHQ(CelebAMaskParams(root=str(root)))[0]
