from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from facerep.hookspecs import API_VERSION, hookimpl

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules (_sync_bn_dist), also for spawned processes
    sys.path.insert(0, str(TESTS))


def _local_plugin() -> types.ModuleType:
    mod = types.ModuleType("facerep_local_test_plugin")

    @hookimpl
    def facerep_plugin_info():
        return {"api_version": API_VERSION}

    @hookimpl
    def facerep_register(registrar):
        registrar.dataset("noise", "facerep.testing.toy:NoiseFaces", params="facerep.testing.toy:NoiseParams")
        registrar.objective("toy", "facerep.testing.toy:ToyContrastive", params="facerep.testing.toy:ToyParams")
        registrar.objective("toy_masked", "facerep.testing.toy:ToyMaskedContrastive", params="facerep.testing.toy:ToyMaskedParams")

    mod.facerep_plugin_info = facerep_plugin_info
    mod.facerep_register = facerep_register
    return mod


@pytest.fixture
def local_plugins():
    """Core plus a local plugin ``local`` (noise dataset, toy objectives); no installed plugins."""
    from facerep.plugins import load_plugins, reset_plugins

    plugins = load_plugins(entry_points=[], extra=[("local", _local_plugin())])
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)
