"""The evaluation runner's feature cache spans entries: entries reading the same images prepared the
same way share one backbone pass, other preparations get their own rows, and no result changes."""

from __future__ import annotations

import gc
import types
import weakref

import attrs
import numpy as np
import pytest
import torch

from facerep.backbones.pixels import PixelBackbone, PixelsParams
from facerep.config import RunConfig, structure
from facerep.data.subset import Subset
from facerep.eval.label_task import classification_metrics
from facerep.eval.protocols import FeatureStore, cached_rows, feature_cache
from facerep.eval.runner import evaluate_entries
from facerep.eval.task import TaskBase, resize_prepared
from facerep.hookspecs import API_VERSION, hookimpl
from facerep.types import DatasetInfo, Sample


@attrs.frozen
class ShadesParams:
    n: int = 24
    seed: int = 0
    split: str = "train"


class Shades:
    """Three noisy grey levels with a fifth of the labels flipped: probes score below 1, so a
    feature that changes moves the numbers."""

    def __init__(self, params: ShadesParams) -> None:
        rng = np.random.default_rng(params.seed)
        self.y = np.arange(params.n) % 3
        level = np.array([90, 128, 166])[self.y]
        self.images = np.clip(level[:, None, None, None] + rng.normal(0, 40, (params.n, 16, 16, 3)), 0, 255).astype(np.uint8)
        flip = rng.random(params.n) < 0.2
        self.y = np.where(flip, (self.y + 1) % 3, self.y)
        self.info = DatasetInfo(name="shades", split=params.split, labels=("expression",),
                                class_names={"expression": ("dark", "mid", "light")})

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=self.images[i], expression=int(self.y[i]), meta={"path": f"shades://{i}"})

    def label_array(self, field: str) -> np.ndarray | None:
        return self.y if field == "expression" else None


@attrs.frozen
class ShadeParams:
    input_size: int = 16
    crop: float = 1.0  # the centre fraction kept before resizing: another preparation of the same images


class ShadeTask(TaskBase):
    name = label = probe_label = "expression"
    primary_metric = "acc"

    def __init__(self, params: ShadeParams) -> None:
        self.params, self.input_size = params, params.input_size

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> object:
        h = sample.image.shape[0]
        m = round(h * (1 - self.params.crop) / 2)
        crop = attrs.evolve(sample, image=sample.image[m:h - m, m:h - m])
        return resize_prepared(crop, self.input_size, {"y": np.asarray(sample.expression)})

    def predict(self, outputs: list, metas: list[dict]) -> list:
        return list(torch.stack([o.float() for o in outputs]).mean(0).argmax(1).numpy())

    def evaluate(self, predictions: list, dataset: Shades) -> dict[str, float]:
        return classification_metrics(np.stack(predictions), dataset.label_array("expression"), dataset.info.class_names["expression"])

    def strata(self, dataset: Shades) -> np.ndarray:
        return dataset.label_array("expression")


@pytest.fixture
def plugins():
    from facerep.plugins import load_plugins, reset_plugins

    mod = types.ModuleType("facerep_cache_test_plugin")

    @hookimpl
    def facerep_plugin_info():
        return {"api_version": API_VERSION}

    @hookimpl
    def facerep_register(registrar):
        registrar.dataset("shades", f"{__name__}:Shades", params=f"{__name__}:ShadesParams")
        registrar.task("shade", f"{__name__}:ShadeTask", params=f"{__name__}:ShadeParams")

    mod.facerep_plugin_info, mod.facerep_register = facerep_plugin_info, facerep_register
    found = load_plugins(entry_points=[], extra=[("cachetest", mod)])
    reset_plugins(found)
    yield found
    reset_plugins(None)


class Counting(PixelBackbone):
    """Counts the images it sees (each call's batch size)."""

    def __init__(self) -> None:
        super().__init__(PixelsParams(size=8))
        self.seen = 0

    def forward(self, x: torch.Tensor):
        self.seen += len(x)
        return super().forward(x)


def _entry(fractions: list[float], seeds: list[int], crop: float = 1.0, name: str = "shades") -> dict:
    return {"name": name, "task": {"name": "cachetest.shade", "params": {"crop": crop}},
            "train": {"name": "cachetest.shades", "params": {"n": 24}},
            "test": {"name": "cachetest.shades", "params": {"n": 12, "seed": 1, "split": "test"}},
            "protocols": [{"name": "core.linear_probe", "params": {"l2_grid": [0.01, 1.0]}}, "core.knn"],
            "fractions": fractions, "seeds": seeds}


def _run(entries: list[dict], plugins, out) -> tuple[list[dict], int]:
    backbone = Counting()
    records = evaluate_entries(structure({"evaluate": entries}, RunConfig), backbone, plugins, out, "pixels")
    return [{k: r[k] for k in ("name", "protocol", "fraction", "seed", "metrics")} for r in records], backbone.seen


def test_adjacent_entries_of_one_family_share_one_backbone_pass(plugins, tmp_path):
    family = [_entry([0.5], [0, 1]), _entry([1.0], [0])]
    records, seen = _run(family, plugins, tmp_path / "both")
    assert len(records) == 3 * 2 and seen == 24 + 12  # every image is read (100 % entry): each exactly once in total
    alone = [r for i, e in enumerate(family) for r in _run([e], plugins, tmp_path / f"alone{i}")[0]]
    assert records == alone  # the same numbers as each entry in a run of its own


def test_entries_with_another_preparation_get_their_own_rows(plugins, tmp_path):
    entries = [_entry([1.0], [0]), _entry([1.0], [0], crop=0.5, name="shades-crop")]
    records, seen = _run(entries, plugins, tmp_path / "both")
    assert seen == 2 * (24 + 12)  # shared rows would have fed the cropped entry the whole images' features
    first, second = (_run([e], plugins, tmp_path / f"alone{i}")[0] for i, e in enumerate(entries))
    assert records == first + second
    assert [r["metrics"] for r in first] != [r["metrics"] for r in second]  # the check above can tell the two apart


def test_an_entry_in_between_drops_the_rows_it_does_not_read(plugins, tmp_path):
    # A, B (another preparation), A: the rows of A are dropped when B starts, so A's pass runs again
    _, seen = _run([_entry([1.0], [0]), _entry([1.0], [0], crop=0.5), _entry([1.0], [0])], plugins, tmp_path)
    assert seen == 3 * (24 + 12)


def test_unnamed_datasets_stay_alive_while_their_rows_are_held():
    """A dataset built in code is keyed by identity; it is kept alive with its rows, so its id
    cannot be given to another dataset whose rows would then be read instead."""
    store, calls = FeatureStore(), []

    def compute(data):
        calls.append(len(data))
        return [data[i].meta["path"] for i in range(len(data))], [{}] * len(data)

    data = Shades(ShadesParams(n=6))
    ref = weakref.ref(data)
    with feature_cache(store, prep="p"):
        assert cached_rows(Subset(data, np.array([4, 1, 4])), ("k",), compute)[0] == ["shades://4", "shades://1", "shades://4"]
        assert cached_rows(Subset(data, np.array([5, 0, 2])), ("k",), compute)[0] == ["shades://5", "shades://0", "shades://2"]
        assert cached_rows(data, ("k",), compute)[0] == [f"shades://{i}" for i in range(6)]
    assert calls == [2, 3, 1] and len(store) == 6  # index 4 computed once; then only what is not yet held
    del data
    gc.collect()
    assert ref() is not None  # held by the store
    store.retain(set())
    gc.collect()
    assert ref() is None and len(store) == 0


def test_named_datasets_share_rows_across_blocks_only_under_one_preparation():
    store, calls = FeatureStore(), []

    def compute(data):
        calls.append(len(data))
        return [0] * len(data), [{}] * len(data)

    for prep in ("a", "a", "b"):
        data = Shades(ShadesParams(n=5))  # rebuilt per block, as the runner does per entry
        with feature_cache(store, prep=prep, datasets=[(data, "shades n=5")]):
            cached_rows(data, ("k",), compute)
    assert calls == [5, 5]  # the second block reads the first one's rows; another preparation computes its own
    with feature_cache(store):  # no preparation given: the block's rows are its own
        cached_rows(data, ("k",), compute)
    assert calls == [5, 5, 5]
