"""pytest plugin for facerep plugin authors, auto-loaded through the ``pytest11`` entry point.

Fixtures:

- ``facerep_plugins``: a fresh plugin set discovered from the installed entry points, installed as
  the process-wide set for the test and forgotten afterwards.
- ``register_plugin``: ``register_plugin(name, module_or_object)`` returns a fresh plugin set with
  that object registered as an extra plugin (the datasette pattern), for the test only.
- ``tiny_faces``: 16 synthetic 64x64 faces with identity, 68 landmarks, mask, attributes,
  expression (``facerep.data.synthetic``; not real data).

Contract suites (subclass them in your plugin's tests): :class:`facerep.testing.ObjectiveContract`.

This module imports nothing heavy at import time: it is loaded by every pytest run in an
environment where facerep is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def facerep_plugins() -> Iterator[Any]:
    from facerep.plugins import load_plugins, reset_plugins

    plugins = load_plugins()
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)


@pytest.fixture
def register_plugin() -> Iterator[Callable[[str, object], Any]]:
    from facerep.plugins import load_plugins, reset_plugins

    def _register(name: str, plugin: object) -> Any:
        plugins = load_plugins(extra=[(name, plugin)])
        reset_plugins(plugins)
        return plugins

    yield _register
    reset_plugins(None)


@pytest.fixture
def tiny_faces() -> Any:
    from facerep.data.synthetic import SyntheticFaces

    return SyntheticFaces(n=16, size=64, n_identities=4, seed=0)
