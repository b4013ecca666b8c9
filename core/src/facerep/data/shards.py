"""Images in uncompressed tar shards, for pretraining pools of millions of faces.

A folder of 20 M files is slow to list and to copy to a cluster's local disk; a few thousand tar
files of ~10,000 images each (webdataset's layout: ``<key>.jpg`` members, optionally ``<key>.txt``
and other members beside them, as ``img2dataset`` or plain ``tar cf`` write them) are not. Each
shard's member headers are read once to index where every image's bytes lie; an image is then read
straight from its shard (a seek and a read, no extraction), so the data never needs unpacking and
the index costs a few integers per image. Handles are opened lazily per process, so data-loader
workers open their own.

- :class:`TarShards`: the index and the reads (also used by plugins whose shards carry more than
  images, e.g. FaRL's captions).
- ``core.image_shards`` (:class:`ImageShards`): unlabelled images from shards, as ``core.image_folder``
  gives them from folders (``resize`` at decode time, ``on_error: skip``).
"""

from __future__ import annotations

import glob
import tarfile
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from facerep.config import positive
from facerep.data.folder import expand_path, resize_shorter_side
from facerep.data.io import decode_image
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["IMAGE_SUFFIXES", "ImageShards", "ImageShardsParams", "TarShards"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class TarShards:
    """The members of tar shards, by key (the member name up to its first dot) and suffix.

    Args:
        patterns: tar files or glob patterns, expanded in order (each sorted); one that matches
            nothing is a :class:`DataError` naming it.
        suffixes: the member suffixes to index besides the image (e.g. ``(".txt",)``).
        field: the config field named in errors.
    """

    def __init__(self, patterns: tuple[str, ...] | list[str], suffixes: tuple[str, ...] = (), field: str = "data.params.shards") -> None:
        paths: list[Path] = []
        for pattern in patterns:
            found = sorted(glob.glob(str(expand_path(pattern))))
            if not found:
                raise DataError(f"{field}: nothing matches {pattern}")
            paths.extend(Path(f) for f in found)
        self.paths = paths
        self.suffixes = tuple(s.lower() for s in suffixes)
        keys: list[str] = []
        rows: list[list[int]] = []
        for s, path in enumerate(paths):
            for key, offsets in self._index(path):
                keys.append(key)
                rows.append([s, *offsets])
        if not rows:
            raise DataError(f"{field}: no image members ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
        self.keys = keys
        #: per image: shard, image offset, image size, then (offset, size) per extra suffix (-1, 0: absent)
        self.index = np.asarray(rows, dtype=np.int64)
        self._handles: dict[int, Any] = {}

    def _index(self, path: Path) -> list[tuple[str, list[int]]]:
        images: dict[str, tuple[int, int]] = {}
        extras: dict[tuple[str, str], tuple[int, int]] = {}
        order: list[str] = []
        try:
            with tarfile.open(path, "r:") as tar:  # uncompressed: members are readable by offset
                for m in tar:
                    if not m.isfile():
                        continue
                    stem = m.name.partition(".")[0]
                    suffix = m.name[len(stem) :].lower()
                    if suffix in IMAGE_SUFFIXES:
                        images[stem] = (m.offset_data, m.size)
                        order.append(stem)
                    elif suffix in self.suffixes:
                        extras[(stem, suffix)] = (m.offset_data, m.size)
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{path}: not a readable (uncompressed) tar shard: {exc}") from None
        out = []
        for key in order:
            offsets = list(images[key])
            for suffix in self.suffixes:
                offsets += list(extras.get((key, suffix), (-1, 0)))
            out.append((key, offsets))
        return out

    def __getstate__(self) -> dict[str, Any]:  # workers open their own file handles
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return len(self.keys)

    def where(self, index: int) -> str:
        """``shard.tar:key``, for messages and ``Sample.meta``."""
        return f"{self.paths[int(self.index[index, 0])]}:{self.keys[index]}"

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        fh = self._handles.get(shard)
        if fh is None:
            fh = self._handles[shard] = open(self.paths[shard], "rb")
        fh.seek(offset)
        return fh.read(size)

    def image_bytes(self, index: int) -> bytes:
        s, offset, size = (int(v) for v in self.index[index, :3])
        return self._read(s, offset, size)

    def member(self, index: int, suffix: str) -> bytes | None:
        """The bytes of ``<key><suffix>`` beside image ``index`` (None when the shard lacks it)."""
        j = 3 + 2 * self.suffixes.index(suffix.lower())
        offset, size = (int(v) for v in self.index[index, j : j + 2])
        return None if offset < 0 else self._read(int(self.index[index, 0]), offset, size)


@attrs.frozen
class ImageShardsParams:
    """Attributes:
    shards: tar files or glob patterns (``/data/faces/*.tar``; brace ranges are not expanded).
    resize: resize every image so that its shorter side is this many pixels, at decode time.
    on_error: ``raise`` on an unreadable image (naming shard and member) or ``skip`` it (the next
        readable image is returned instead).
    name: the dataset's name in reports.
    """

    shards: tuple[str, ...]
    resize: int | None = attrs.field(default=None, validator=positive)
    on_error: Literal["raise", "skip"] = "raise"
    name: str = "image_shards"


class ImageShards:
    """A :class:`~facerep.protocols.FaceDataset` of the images in tar shards (unlabelled)."""

    def __init__(self, params: ImageShardsParams) -> None:
        self.params = params
        self.shards = TarShards(params.shards)
        self.info = DatasetInfo(name=params.name)
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.shards)

    def _decode(self, index: int) -> np.ndarray:
        return resize_shorter_side(decode_image(self.shards.image_bytes(index), path=self.shards.where(index)), self.params.resize)

    def __getitem__(self, index: int) -> Sample:
        n = len(self.shards)
        for attempt in range(n):
            i = (index + attempt) % n
            try:
                image = self._decode(i)
            except DataError:
                if self.params.on_error == "raise":
                    raise
                self.skipped.add(self.shards.where(i))
                continue
            return Sample(image=image, meta={"path": self.shards.where(i), "index": i})
        raise DataError(f"no readable image in {', '.join(map(str, self.shards.paths))}")
