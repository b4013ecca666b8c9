"""``core.image_shards``: images read by offset from uncompressed tar shards, as ``tar cf`` and
img2dataset write them, through a real pretraining run."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from facerep.data.shards import ImageShards, ImageShardsParams, TarShards
from facerep.errors import DataError


def _jpeg(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)  # lossless: decoded pixels are checkable
    assert ok
    return buf.tobytes()


def _shard(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_images_and_side_members_are_read_by_offset(tmp_path):
    a = _shard(tmp_path / "000.tar", {"k0.png": _jpeg(0), "k0.txt": b"a face", "k1.png": _jpeg(1), "notes.json": b"{}"})
    b = _shard(tmp_path / "001.tar", {"k2.png": _jpeg(2)})
    shards = TarShards([str(tmp_path / "*.tar")], suffixes=(".txt",))
    assert shards.paths == [a, b] and shards.keys == ["k0", "k1", "k2"]
    assert shards.member(0, ".txt") == b"a face" and shards.member(1, ".txt") is None
    data = ImageShards(ImageShardsParams(shards=(str(tmp_path / "*.tar"),)))
    for i in range(3):
        want = cv2.cvtColor(cv2.imdecode(np.frombuffer(_jpeg(i), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.array_equal(data[i].image, want)
    assert data[2].meta["path"] == f"{b}:k2"
    clone = pickle.loads(pickle.dumps(data))  # a data-loader worker: own handles, same samples
    assert np.array_equal(clone[1].image, data[1].image)
    assert ImageShards(ImageShardsParams(shards=(str(a),), resize=15))[0].image.shape == (20, 15, 3)


def test_bad_input_names_the_pattern_the_shard_and_the_member(tmp_path):
    with pytest.raises(DataError, match=r"data.params.shards: nothing matches .*nothing-\*\.tar"):
        TarShards([str(tmp_path / "nothing-*.tar")])
    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match=r"broken.tar: not a readable \(uncompressed\) tar shard"):
        TarShards([str(tmp_path / "broken.tar")])
    shard = _shard(tmp_path / "s.tar", {"good.png": _jpeg(0), "bad.png": b"\x89PNG truncated"})
    strict = ImageShards(ImageShardsParams(shards=(str(shard),)))
    with pytest.raises(DataError, match=r"s.tar:bad"):
        strict[1]
    lenient = ImageShards(ImageShardsParams(shards=(str(shard),), on_error="skip"))
    assert lenient[1].meta["path"].endswith(":good") and lenient.skipped == {f"{shard}:bad"}


def test_a_run_pretrains_from_shards(tmp_path, local_plugins):
    from facerep.run import run

    members = {f"face{i:03d}.png": _jpeg(i, (48, 48)) for i in range(12)}
    _shard(tmp_path / "faces-000.tar", dict(list(members.items())[:6]))
    _shard(tmp_path / "faces-001.tar", dict(list(members.items())[6:]))
    cfg = {"name": "shards", "data": {"name": "core.image_shards", "params": {"shards": [str(tmp_path / "faces-*.tar")], "resize": 40}},
           "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
           "objective": {"name": "local.toy", "params": {"crop": 32}},
           "train": {"max_steps": 2, "batch_size": 4, "log_every": 1, "channels_last": False}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = run(path, work_dir=tmp_path / "wd", plugins=local_plugins)
    assert Path(summary["backbone"]).is_file()
