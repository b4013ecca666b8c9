from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from facerep.hookspecs import API_VERSION, hookimpl
from facerep.types import DatasetInfo, Sample


class NoiseFaces:
    """In-memory random RGB images (a stand-in dataset for machinery tests)."""

    def __init__(self, params=None) -> None:  # noqa: ANN001
        n = 32 if params is None else params.n
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.info = DatasetInfo(name="noise", labels=("expression",), class_names={"expression": ("a", "b")})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=self.images[i], expression=int(i % 2), meta={"path": f"noise://{i}"})


def _local_plugin() -> types.ModuleType:
    mod = types.ModuleType("facerep_local_test_plugin")

    @hookimpl
    def facerep_plugin_info():  # noqa: ANN202
        return {"api_version": API_VERSION}

    @hookimpl
    def facerep_register(registrar):  # noqa: ANN001, ANN202
        registrar.dataset("noise", "conftest:NoiseFaces")
        registrar.objective("toy", "facerep.testing.toy:ToyContrastive", params="facerep.testing.toy:ToyParams")

    mod.facerep_plugin_info = facerep_plugin_info
    mod.facerep_register = facerep_register
    return mod


@pytest.fixture
def local_plugins(monkeypatch):  # noqa: ANN001, ANN201
    """A plugin set with core plus a local plugin ``local`` (noise dataset, toy objective)."""
    from facerep.plugins import load_plugins, reset_plugins

    sys.modules.setdefault("conftest", sys.modules[__name__])
    plugins = load_plugins(entry_points=[], extra=[("local", _local_plugin())])
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)
