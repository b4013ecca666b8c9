"""The position-addressed sample stream: world-size independent, resumable, seeded per position."""

from __future__ import annotations

import itertools

import numpy as np

from facerep.engine.stream import StreamSampler, ViewStream
from facerep.testing.toy import NoiseFaces, NoiseParams


def _take(sampler: StreamSampler, n: int) -> list[int]:
    return list(itertools.islice(iter(sampler), n))


def test_two_ranks_split_each_global_batch_into_contiguous_slices():
    one = _take(StreamSampler(batch_size=8), 8 * 3)
    r0 = _take(StreamSampler(batch_size=4, rank=0, world_size=2), 4 * 3)
    r1 = _take(StreamSampler(batch_size=4, rank=1, world_size=2), 4 * 3)
    for step in range(3):
        assert r0[4 * step : 4 * step + 4] + r1[4 * step : 4 * step + 4] == one[8 * step : 8 * step + 8]


def test_resumed_sampler_continues_where_the_uninterrupted_one_is():
    full = _take(StreamSampler(batch_size=5, rank=1, world_size=3), 5 * 7)
    resumed = StreamSampler(batch_size=5, rank=1, world_size=3)
    resumed.start_step = 4
    assert _take(resumed, 5 * 3) == full[5 * 4 :]


def test_each_epoch_is_a_seeded_permutation_and_views_depend_on_position_only():
    ds = NoiseFaces(NoiseParams(n=10, size=8))
    transform = lambda sample, rng: [sample.image, (sample.image.astype(np.int64) + rng.integers(0, 5)).clip(0, 255).astype(np.uint8)]
    stream = ViewStream(ds, transform, seed=3)
    epoch0 = [stream.index_of(k) for k in range(10)]
    epoch1 = [stream.index_of(k) for k in range(10, 20)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0 != epoch1
    again = ViewStream(ds, transform, seed=3)
    for k in (13, 2, 27):  # any order of access, e.g. another worker
        a, b = stream[k]["views"], again[k]["views"]
        assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b, strict=True))
        assert a[0].shape == (3, 8, 8)  # CHW uint8
    other = ViewStream(ds, transform, seed=4)
    assert other.index_of(0) != stream.index_of(0) or other.index_of(1) != stream.index_of(1)
