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

from pathlib import Path
from typing import Any

import attrs

from facerep.data.folder import expand_path
from facerep.data.io import csv_rows, decode_image
from facerep.data.shards import TarShards
from facerep.errors import ConfigError, DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["CaptionTable", "CaptionTableParams", "WebDataset", "WebDatasetParams"]


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


class WebDataset:
    """Image-caption pairs in webdataset tar shards, read by offset through core's
    :class:`~facerep.data.shards.TarShards`."""

    def __init__(self, params: WebDatasetParams) -> None:
        self.caption_suffix = params.caption_suffix
        self.shards = TarShards(params.shards, suffixes=(params.caption_suffix,))
        self.info = DatasetInfo(name=params.name, labels=("caption",))

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, index: int) -> Sample:
        where = self.shards.where(index)
        raw = self.shards.member(index, self.caption_suffix)
        if raw is None:
            raise DataError(f"{where}: no caption member ({self.shards.keys[index]}{self.caption_suffix}) in the shard")
        try:
            caption = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{where}: the caption is not UTF-8") from None
        image = decode_image(self.shards.image_bytes(index), path=where)
        return Sample(image=image, caption=caption, meta={"path": where})
