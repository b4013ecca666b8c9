"""Reading data files with errors that name the file: text label files and encoded images.

Every reader of a label file or an image goes through here, so that a bad file gives one
:class:`~facerep.errors.DataError` naming it (and the line, for text) instead of a raw
``UnicodeDecodeError`` / ``cv2.error`` traceback. Input files are only ever opened for reading.

* :func:`read_text`: a whole text file as ``str`` (UTF-8, an optional UTF-8 BOM is dropped).
* :func:`open_text`: the same, streamed line by line (for ``csv.reader`` over large files);
  :func:`csv_rows` wraps it into ``(line number, row)`` pairs.
* :func:`decode_image`: encoded bytes or a file -> ``(H, W, 3)`` uint8 RGB, refusing files whose
  header claims more than :data:`MAX_IMAGE_PIXELS` pixels *before* anything is allocated (PNG, JPEG,
  BMP, GIF and WebP headers are read here; other formats rely on OpenCV's own limit).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from facerep.errors import DataError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "check_image_size",
    "csv_rows",
    "decode_image",
    "image_header_size",
    "open_text",
    "read_text",
]

#: Images whose header claims more pixels than this are refused (a corrupt header or a
#: decompression bomb): 2**27 = 134 Mpx, about 400 MB as RGB uint8, far above any face photo.
#: Module-level so that a project with larger images can raise it.
MAX_IMAGE_PIXELS = 1 << 27

_BOM = codecs.BOM_UTF8
ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview


# --- text ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_errors(path: str | os.PathLike[str], what: str = "file") -> Iterator[None]:
    """OS errors of opening or reading ``path`` as one DataError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{os.fspath(path)}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{os.fspath(path)}: is a folder, expected a {what}") from None
    except OSError as exc:
        raise DataError(f"{os.fspath(path)}: cannot read {what}: {exc.strerror or exc}") from None


def _read_bytes(path: str | os.PathLike[str], what: str = "file") -> bytes:
    with _file_errors(path, what):
        return Path(path).read_bytes()


def _not_utf8(path: str | os.PathLike[str], line: int, byte: int, offset: int) -> DataError:
    return DataError(f"{os.fspath(path)}: line {line}: not UTF-8 text (byte 0x{byte:02x} at offset {offset})")


def read_text(path: str | os.PathLike[str], *, newline: str | None = None) -> str:
    """The text of a UTF-8 label file (a leading UTF-8 BOM is dropped).

    Args:
        path: the file.
        newline: ``None`` (default) turns ``\\r\\n`` and ``\\r`` into ``\\n`` like ``open()``'s
            universal newlines; ``""`` keeps line endings as they are (for ``csv``).

    Raises:
        DataError: ``"<path>: line 3: not UTF-8 text (byte 0xff at offset 57)"`` (``offset``: the
            byte offset in the file) on undecodable bytes; a message naming the file when it is
            missing, a folder or unreadable.
    """
    data = _read_bytes(path)
    start = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = start + exc.start
        raise _not_utf8(path, data.count(b"\n", 0, at) + 1, data[at], at) from None
    if newline is None and "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _lines(fh, path: str | os.PathLike[str]) -> Iterator[str]:
    offset = 0
    for no, raw in enumerate(fh, start=1):
        start = len(_BOM) if no == 1 and raw.startswith(_BOM) else 0
        try:
            yield raw[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, no, raw[start + exc.start], offset + start + exc.start) from None
        offset += len(raw)


@contextlib.contextmanager
def open_text(path: str | os.PathLike[str]) -> Iterator[Iterator[str]]:
    """``with open_text(path) as lines: csv.reader(lines)``: the file's lines (UTF-8, BOM dropped,
    line endings kept as with ``newline=""``), decoded one at a time so that a large CSV is not
    held in memory twice. Errors are those of :func:`read_text`, raised at the bad line."""
    with _file_errors(path):
        fh = open(path, "rb")  # closed in the finally below
    try:
        yield _lines(fh, path)
    finally:
        fh.close()


def csv_rows(path: str | os.PathLike[str], **fmt) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` for each row of a UTF-8 CSV file (``fmt``: ``csv.reader`` options);
    the line number is the row's last physical line (its only one unless a quoted field spans
    lines). A malformed row or undecodable text raises DataError naming file and line."""
    with open_text(path) as lines:
        reader = csv.reader(lines, **fmt)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"{os.fspath(path)}: line {reader.line_num}: malformed CSV: {exc}") from None
            yield reader.line_num, row


# --- images --------------------------------------------------------------------------------------


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment of a JPEG stream, or None."""
    n, pos = len(data), 2
    while pos + 3 < n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0-SOF15
            if pos + 9 > n:
                return None
            return int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(data[pos + 5 : pos + 7], "big")
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def image_header_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(width, height)`` that the header of an encoded PNG, JPEG, BMP, GIF or WebP image claims,
    read without decoding; None for other formats or a header too short to tell."""
    head = bytes(data[:64])
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(bytes(data))
    if head.startswith(b"BM") and len(head) >= 26:
        if int.from_bytes(head[14:18], "little") == 12:  # BITMAPCOREHEADER: 16-bit sizes
            return int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
        w, h = (int.from_bytes(head[k : k + 4], "little", signed=True) for k in (18, 22))
        return abs(w), abs(h)  # negative height: top-down rows
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 ":
            return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


def check_image_size(data: bytes | bytearray | memoryview, *, path: str | os.PathLike[str] | None = None) -> None:
    """Raise DataError (naming ``path`` and the claimed size) when the encoded image's header
    claims more than :data:`MAX_IMAGE_PIXELS` pixels. Cheap: only the header is looked at."""
    size = image_header_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        w, h = size
        label = os.fspath(path) if path is not None else "<image bytes>"
        raise DataError(f"{label}: image header claims {w}x{h} pixels ({w * h / 1e6:,.0f} Mpx), over the limit of "
                        f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (facerep.data.io.MAX_IMAGE_PIXELS); a corrupt or hostile file? "
                        "Not decoded")


def _jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG stream reaches its end-of-image marker.

    OpenCV < 5 decodes a truncated JPEG into a grey-padded image with only a warning on stderr,
    so completeness is checked here: walk the marker segments, skip each scan's entropy-coded data
    (where ``FF`` is followed by ``00`` stuffing or a restart marker) and look for EOI (``FFD9``).
    Bytes after EOI (e.g. appended metadata) are ignored.
    """
    n, pos = len(data), 2
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return True  # not a marker: malformed in a way the decoder will judge
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if pos + 4 > n:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return False
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    pos += 2
                elif nxt == 0xFF:
                    pos += 1
                else:
                    break
    return False


def decode_image(source: ImageSource, *, path: str | os.PathLike[str] | None = None, grey: bool = False) -> np.ndarray:
    """Read an image file (or its encoded bytes) into an ``(H, W, 3)`` uint8 RGB array.

    Grey images are repeated on 3 channels, an alpha channel is dropped (like PIL's
    ``convert("RGB")``), 16-bit images are scaled to 8 bits and JPEG EXIF orientation is applied
    (all by ``cv2.IMREAD_COLOR``), then BGR is turned into RGB.

    Args:
        source: a path, or the encoded bytes.
        path: what to call ``source`` in error messages when it is bytes (default ``<image bytes>``).
        grey: return an ``(H, W)`` uint8 grey image instead (``cv2.IMREAD_GRAYSCALE``).

    Raises:
        DataError: ``"<path>: ..."``, when the file is missing, unreadable, empty, truncated,
            corrupt, or its header claims more than :data:`MAX_IMAGE_PIXELS` pixels (checked
            before decoding, so nothing that large is allocated).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = os.fspath(path) if path is not None else "<image bytes>"
        data = bytes(source)
    else:
        label = os.fspath(path) if path is not None else os.fspath(source)
        # read the bytes + imdecode rather than cv2.imread: works with non-ASCII paths on every
        # platform and tells a missing file from a corrupt one
        data = _read_bytes(source, "image file")
    if not data:
        raise DataError(f"{label}: cannot decode image: the file is empty")
    check_image_size(data, path=label)
    if data.startswith(b"\xff\xd8") and not _jpeg_complete(data):
        raise DataError(f"{label}: cannot decode image: truncated JPEG (no end-of-image marker)")
    try:
        out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    except cv2.error as exc:
        # "OpenCV(5.0.0) /path/loadsave.cpp:79: error: (-215:Assertion failed) ... in function '...'"
        # (exc.err can be stale: OpenCV keeps it on the class)
        reason = next((ln for ln in reversed(str(exc).splitlines()) if ln.strip()), "unknown error").split(" error: ", 1)[-1].strip()
        raise DataError(f"{label}: cannot decode image: OpenCV: {reason}") from None
    except MemoryError:
        raise DataError(f"{label}: cannot decode image: out of memory") from None
    if out is None or out.size == 0:
        raise DataError(f"{label}: cannot decode image: corrupt or unsupported format")
    return out if grey else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
