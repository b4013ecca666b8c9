"""facerep.data.io: text and image files read with errors that name the file, never altered."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

from facerep.data import io as fio
from facerep.data.augment import decode_image as augment_decode
from facerep.data.check import check_dataset
from facerep.data.folder import FolderRoot, ImageFolder, ImageFolderParams
from facerep.errors import DataError

# --- hand-made image headers ---------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR says width x height (8-bit RGB) over a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """SOI, APP0/JFIF, a baseline SOF0 saying width x height (3 components), a short scan, EOI."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + app0 + sof0 + sos + b"\x12\x34\x56" + b"\xff\xd9"


def _forbid_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called on an image whose header claims an absurd size")

    monkeypatch.setattr(fio.cv2, "imdecode", boom)


# --- text ----------------------------------------------------------------------------------------


def test_read_text_names_file_line_and_offset_of_undecodable_bytes(tmp_path):
    p = tmp_path / "labels.txt"
    raw = b"line1\nline2\nab\xffcd\n"
    p.write_bytes(raw)
    with pytest.raises(DataError, match=r"labels\.txt: line 3: not UTF-8 text \(byte 0xff at offset 14\)"):
        fio.read_text(p)
    with pytest.raises(DataError, match=r"labels\.txt: line 3: not UTF-8 text \(byte 0xff at offset 14\)"):
        with fio.open_text(p) as lines:
            list(lines)
    p.write_bytes(b"\xef\xbb\xbf" + raw)  # the offset counts the BOM: it is a byte of the file
    with pytest.raises(DataError, match=r"line 3: .*byte 0xff at offset 17"):
        fio.read_text(p)
    p.write_bytes(b"caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=r"labels\.txt: line 1: .*byte 0xe9 at offset 3"):
        fio.read_text(p)
    assert p.read_bytes() == b"caf\xe9\n"


def test_read_text_drops_a_bom_and_normalises_newlines_unless_asked(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfname value\r\nb\xc3\xa9 2\rlast\n")
    assert fio.read_text(p) == "name value\nbé 2\nlast\n"
    assert fio.read_text(p, newline="") == "name value\r\nbé 2\rlast\n"
    with fio.open_text(p) as lines:
        assert list(lines) == ["name value\r\n", "bé 2\rlast\n"]


def test_missing_file_or_folder_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        fio.read_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        with fio.open_text(tmp_path / "nope.csv"):
            pass
    with pytest.raises(DataError, match=r"is a folder"):
        fio.read_text(tmp_path)


def test_csv_rows_give_line_numbers_and_name_malformed_rows(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b'\xef\xbb\xbfa,b\r\n1,"x\r\ny"\r\n\r\n2,z\r\n')
    assert list(fio.csv_rows(p)) == [(1, ["a", "b"]), (3, ["1", "x\r\ny"]), (4, []), (5, ["2", "z"])]
    p.write_bytes(b'a,b\n1,"x"y\n')
    with pytest.raises(DataError, match=r"t\.csv: line 2: malformed CSV"):
        list(fio.csv_rows(p, strict=True))
    p.write_bytes(b"a,b\n1,2\n3,\x80\n")
    with pytest.raises(DataError, match=r"t\.csv: line 3: not UTF-8 text \(byte 0x80 at offset 10\)"):
        list(fio.csv_rows(p))
    assert p.read_bytes() == b"a,b\n1,2\n3,\x80\n"


# --- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "params"), [(".png", []), (".jpg", []), (".bmp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                                             (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])])
def test_header_size_matches_real_encodings(ext, params):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img, params)
    assert ok and fio.image_header_size(buf.tobytes()) == (53, 37)
    assert fio.decode_image(buf.tobytes()).shape == (37, 53, 3)


def test_header_size_of_hand_made_headers():
    assert fio.image_header_size(png_claiming(100_000, 100_000)) == (100_000, 100_000)
    assert fio.image_header_size(jpeg_claiming(65_535, 65_000)) == (65_535, 65_000)
    vp8x = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\0" * 4 + (99_999).to_bytes(3, "little") * 2
    assert fio.image_header_size(vp8x) == (100_000, 100_000)
    gif = b"GIF89a" + struct.pack("<HH", 60_000, 50_000) + b"\0" * 10
    assert fio.image_header_size(gif) == (60_000, 50_000)
    assert fio.image_header_size(b"II*\0" + b"\0" * 60) is None  # TIFF: left to OpenCV's own limit


@pytest.mark.parametrize(("name", "data", "claim"), [
    ("bomb.png", png_claiming(100_000, 100_000), "100000x100000"),
    ("bomb.jpg", jpeg_claiming(65_535, 65_535), "65535x65535"),  # JPEG sizes are 16-bit: 65535 is its largest
    ("big.png", png_claiming(20_000, 20_000), "20000x20000"),  # under OpenCV's own 1 Gpx limit: it would allocate 1.2 GB
])
def test_absurd_header_is_refused_before_decoding(tmp_path, monkeypatch, name, data, claim):
    p = tmp_path / name
    p.write_bytes(data)
    _forbid_decoding(monkeypatch)
    tracemalloc.start()
    try:
        for call in (lambda: fio.decode_image(p), lambda: augment_decode(p), lambda: fio.decode_image(data, path=p)):
            with pytest.raises(DataError, match=rf"{name}: image header claims {claim} pixels") as info:
                call()
            assert str(p) in str(info.value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated while refusing {name}"
    with pytest.raises(DataError, match=r"<image bytes>: image header claims"):
        fio.decode_image(data)
    assert p.read_bytes() == data


def test_opencv_limit_and_errors_become_data_errors(tmp_path, monkeypatch):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_claiming(100_000, 100_000))
    monkeypatch.setattr(fio, "MAX_IMAGE_PIXELS", 1 << 40)  # our check off: OpenCV's own limit answers, as a DataError
    with pytest.raises(DataError, match=r"bomb\.png: cannot decode image: OpenCV"):
        fio.decode_image(p)

    def raising(*args, **kwargs):
        raise cv2.error("simulated decoder failure")

    monkeypatch.setattr(fio.cv2, "imdecode", raising)
    _ok, buf = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"x\.png: cannot decode image: OpenCV: simulated decoder failure"):
        fio.decode_image(buf.tobytes(), path="x.png")


def test_corrupt_bytes_missing_and_empty_images(tmp_path):
    p = tmp_path / "face.jpg"
    p.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(DataError, match=r"face\.jpg: cannot decode image: corrupt or unsupported format"):
        fio.decode_image(p)
    p.write_bytes(png_claiming(8, 8)[:40])  # a valid IHDR, then cut
    with pytest.raises(DataError, match=r"face\.jpg: cannot decode image"):
        fio.decode_image(p)
    with pytest.raises(DataError, match=r"nope\.png: image file not found"):
        fio.decode_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: cannot decode image: the file is empty"):
        fio.decode_image(tmp_path / "empty.png")


def test_valid_images_decode_as_before(tmp_path):
    img = np.random.default_rng(1).integers(0, 255, (9, 7, 3), dtype=np.uint8)
    p = tmp_path / "ok.png"
    _ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    p.write_bytes(buf.tobytes())
    assert np.array_equal(fio.decode_image(p), img) and np.array_equal(augment_decode(str(p)), img)
    grey = fio.decode_image(p, grey=True)
    assert grey.shape == (9, 7) and grey.dtype == np.uint8


# --- facerep data check ----------------------------------------------------------------------------


def test_data_check_reports_absurd_and_corrupt_images_and_goes_on(tmp_path, monkeypatch):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for k in range(3):
        _ok, buf = cv2.imencode(".png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        (folder / f"{k}.png").write_bytes(buf.tobytes())
    (folder / "3_bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (folder / "4_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    report = check_dataset(ImageFolder(ImageFolderParams(roots=(FolderRoot(str(folder)),))))
    assert report["checked"] == 5 and report["unreadable"] == 2 and report["height"] == [16, 16, 16]
    assert "3_bomb.png: image header claims 100000x100000 pixels" in report["errors"][0]
    assert "4_broken.jpg: cannot decode image" in report["errors"][1]
    (problem,) = report["problems"]
    assert problem.startswith("2 unreadable file(s)") and "3_bomb.png" in problem and "4_broken.jpg" in problem
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before

    class Exploding(ImageFolder):  # a reader bug (not a DataError) is reported too, and the check goes on
        def __getitem__(self, index):
            if index == 1:
                raise cv2.error("boom")
            return super().__getitem__(index)

    report = check_dataset(Exploding(ImageFolderParams(roots=(FolderRoot(str(folder)),))), limit=3)
    assert report["unreadable"] == 1 and "error: boom" in report["errors"][0]
