"""Image-text pairs from local files, in the formats LAION-Face users have.

- ``farl.caption_table``: a table with an image path column and a caption column: Parquet
  (``.parquet``, read with pyarrow: LAION's metadata format) or delimited text (``.tsv``: tabs,
  ``.csv``: commas) with a header row. Relative paths are under ``root``.
- ``farl.webdataset``: webdataset tar shards (``<key>.jpg`` / ``.png`` / ``.webp`` + ``<key>.txt``
  caption, as img2dataset writes them). Each shard's member headers are read once to index where
  every sample's bytes lie; a sample is then read straight from its shard (a seek and a read, no
  extraction), so millions of pairs need neither unpacking nor memory beyond the index. Shards are
  opened lazily per process (data-loader workers open their own handles).

Both give :class:`~facerep.types.Sample` with ``caption``; a bad image or a sample without caption
is a :class:`~facerep.errors.DataError` naming the file (and the shard member).
"""

from __future__ import annotations

import glob
import tarfile
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from facerep.data.folder import expand_path
from facerep.data.io import csv_rows, decode_image
from facerep.errors import ConfigError, DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["CaptionTable", "CaptionTableParams", "WebDataset", "WebDatasetParams"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@attrs.frozen
class CaptionTableParams:
    """Attributes:
    table: the ``.parquet``, ``.tsv`` or ``.csv`` file.
    root: folder that relative image paths are under (default: the table's folder).
    image_column, caption_column: column names (LAION: ``url`` paths after download are usually
        stored by img2dataset as ``key``-named files; point ``image_column`` at the local path).
    name: dataset name in reports.
    """

    table: str
    root: str | None = None
    image_column: str = "path"
    caption_column: str = "caption"
    name: str = "caption_table"


def _read_parquet(path: Path, columns: list[str]) -> list[list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency of facerep-farl
        raise ConfigError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet table with columns {columns} ({type(exc).__name__}: {exc})") from None
    return [table.column(c).to_pylist() for c in columns]


class CaptionTable:
    def __init__(self, params: CaptionTableParams) -> None:
        path = expand_path(params.table)
        if not path.is_file():
            raise DataError(f"caption table not found: {path}")
        cols = [params.image_column, params.caption_column]
        if path.suffix == ".parquet":
            images, captions = _read_parquet(path, cols)
        elif path.suffix in (".tsv", ".csv"):
            rows = csv_rows(path, delimiter="\t" if path.suffix == ".tsv" else ",")
            try:
                _, header = next(rows)
            except StopIteration:
                raise DataError(f"{path}: empty table (expected a header row naming {cols})") from None
            missing = [c for c in cols if c not in header]
            if missing:
                raise DataError(f"{path}: no column {', '.join(map(repr, missing))} in the header {header}")
            i, j = header.index(cols[0]), header.index(cols[1])
            images, captions = [], []
            for line, row in rows:
                if len(row) <= max(i, j):
                    raise DataError(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
                images.append(row[i])
                captions.append(row[j])
        else:
            raise ConfigError(f"data.params.table: {path.name}: expected .parquet, .tsv or .csv")
        root = expand_path(params.root) if params.root else path.parent
        self.paths = [str(p) if Path(p).is_absolute() else str(root / p) for p in images]
        self.captions = [c if c is not None else "" for c in captions]
        self.source = path
        self.info = DatasetInfo(name=params.name, labels=("caption",))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        if not self.captions[index].strip():
            raise DataError(f"{self.source}: row {index + 1} ({path}) has an empty caption")
        return Sample(image=decode_image(path), caption=self.captions[index], meta={"path": path})


@attrs.frozen
class WebDatasetParams:
    """Attributes:
    shards: tar files, or glob patterns (``/data/laion_face/{00000..00099}.tar`` brace ranges are
        not expanded; use ``/data/laion_face/*.tar``).
    caption_suffix: the member holding the caption (``.txt``).
    name: dataset name in reports.
    """

    shards: tuple[str, ...]
    caption_suffix: str = ".txt"
    name: str = "webdataset"


def _index_shard(path: Path, caption_suffix: str) -> list[tuple[str, int, int, int, int]]:
    """``(key, image offset, image size, caption offset, caption size)`` per complete sample."""
    images: dict[str, tuple[int, int]] = {}
    texts: dict[str, tuple[int, int]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed tar: members can be read by offset
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name
                stem, _dot, _ = name.partition(".")
                suffix = name[len(stem):].lower()
                if suffix in IMAGE_SUFFIXES:
                    images[stem] = (m.offset_data, m.size)
                    order.append(stem)
                elif suffix == caption_suffix:
                    texts[stem] = (m.offset_data, m.size)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path}: not a readable (uncompressed) tar shard: {exc}") from None
    return [(k, *images[k], *texts.get(k, (-1, 0))) for k in order]


class WebDataset:
    def __init__(self, params: WebDatasetParams) -> None:
        shards: list[Path] = []
        for pattern in params.shards:
            found = sorted(glob.glob(str(expand_path(pattern))))
            if not found:
                raise DataError(f"data.params.shards: nothing matches {pattern}")
            shards.extend(Path(f) for f in found)
        self.shards = shards
        keys: list[str] = []
        rows: list[tuple[int, int, int, int, int]] = []
        for s, shard in enumerate(shards):
            for key, io, isz, co, csz in _index_shard(shard, params.caption_suffix):
                keys.append(key)
                rows.append((s, io, isz, co, csz))
        if not rows:
            raise DataError(f"data.params.shards: no image members in {', '.join(map(str, shards))}")
        self.keys = keys
        self.index = np.asarray(rows, dtype=np.int64)
        self.info = DatasetInfo(name=params.name, labels=("caption",))
        self._handles: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # workers open their own file handles
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return len(self.keys)

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        fh = self._handles.get(shard)
        if fh is None:
            fh = self._handles[shard] = open(self.shards[shard], "rb")
        fh.seek(offset)
        return fh.read(size)

    def __getitem__(self, index: int) -> Sample:
        s, io, isz, co, csz = (int(v) for v in self.index[index])
        where = f"{self.shards[s]}:{self.keys[index]}"
        if co < 0:
            raise DataError(f"{where}: no caption member ({self.keys[index]}.txt) in the shard")
        try:
            caption = self._read(s, co, csz).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{where}: the caption is not UTF-8") from None
        image = decode_image(self._read(s, io, isz), path=where)
        return Sample(image=image, caption=caption, meta={"path": where})
