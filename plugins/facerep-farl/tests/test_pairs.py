"""Image-text pairs from a Parquet / TSV table and from webdataset tar shards, with fixtures
written in those formats here; bad rows and members are errors naming the file."""

from __future__ import annotations

import io
import tarfile

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_farl.pairs import CaptionTable, CaptionTableParams, WebDataset, WebDatasetParams


def _jpeg(seed: int, size: int = 24) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.fixture
def images(tmp_path):
    for i in range(3):
        (tmp_path / f"face{i}.jpg").write_bytes(_jpeg(i))
    return tmp_path


def test_tsv_table_with_relative_paths(images):
    (images / "pairs.tsv").write_text("path\tcaption\nface0.jpg\ta smiling woman\nface2.jpg\ta man with a hat\n")
    ds = CaptionTable(CaptionTableParams(table=str(images / "pairs.tsv")))
    assert len(ds) == 2 and ds[1].caption == "a man with a hat" and ds[1].image.shape == (24, 28, 3)
    assert ds[0].meta["path"].endswith("face0.jpg")


def test_parquet_table_with_named_columns(images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"file": [str(images / "face1.jpg")], "text": ["a blurry photo"], "other": [3]}), images / "laion.parquet")
    ds = CaptionTable(CaptionTableParams(table=str(images / "laion.parquet"), image_column="file", caption_column="text"))
    assert len(ds) == 1 and ds[0].caption == "a blurry photo" and ds[0].image.dtype == np.uint8
    with pytest.raises(DataError, match=r"laion\.parquet: not a readable Parquet table"):
        CaptionTable(CaptionTableParams(table=str(images / "laion.parquet")))


def test_bad_tables_name_the_file_and_line(images):
    (images / "bad.tsv").write_text("path\tcaption\nface0.jpg\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: 1 fields"):
        CaptionTable(CaptionTableParams(table=str(images / "bad.tsv")))
    (images / "cols.csv").write_text("image,text\nface0.jpg,hi\n")
    with pytest.raises(DataError, match="no column 'path'"):
        CaptionTable(CaptionTableParams(table=str(images / "cols.csv")))
    (images / "broken.csv").write_text("path,caption\nmissing.jpg,a face\n")
    with pytest.raises(DataError, match=r"missing\.jpg"):
        CaptionTable(CaptionTableParams(table=str(images / "broken.csv")))[0]


def _shard(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_are_read_by_offset(tmp_path):
    french = "une femme \u00e9l\u00e9gante".encode()
    _shard(tmp_path / "00000.tar", [("000000000.jpg", _jpeg(0)), ("000000000.txt", b"a smiling woman"),
                                    ("000000000.json", b"{}"), ("000000001.jpg", _jpeg(1)), ("000000001.txt", french)])
    _shard(tmp_path / "00001.tar", [("000000002.txt", b"a man"), ("000000002.jpg", _jpeg(2))])  # caption before image
    ds = WebDataset(WebDatasetParams(shards=(str(tmp_path / "*.tar"),)))
    assert len(ds) == 3
    assert [ds[i].caption for i in range(3)] == ["a smiling woman", "une femme \u00e9l\u00e9gante", "a man"]
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(_jpeg(2), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(ds[2].image, expected)
    import pickle

    again = pickle.loads(pickle.dumps(ds))  # as a data-loader worker gets it: no open handles
    assert again[0].caption == "a smiling woman"


def test_webdataset_problems_name_shard_and_member(tmp_path):
    _shard(tmp_path / "a.tar", [("k1.jpg", _jpeg(0)), ("k2.jpg", b"not an image"), ("k2.txt", b"text")])
    ds = WebDataset(WebDatasetParams(shards=(str(tmp_path / "a.tar"),)))
    with pytest.raises(DataError, match=r"a\.tar:k1: no caption member"):
        ds[0]
    with pytest.raises(DataError, match=r"a\.tar:k2"):
        ds[1]
    with pytest.raises(DataError, match="nothing matches"):
        WebDataset(WebDatasetParams(shards=(str(tmp_path / "none*.tar"),)))
    (tmp_path / "junk.tar").write_bytes(b"x" * 100)
    with pytest.raises(DataError, match=r"junk\.tar: not a readable"):
        WebDataset(WebDatasetParams(shards=(str(tmp_path / "junk.tar"),)))
