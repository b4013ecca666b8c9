"""``farl_plugins``: ``farl.farl`` resolvable whether or not the distribution is pip-installed."""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules, also for spawned processes
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def farl_plugins():
    import facerep_farl.plugin
    from facerep.plugins import load_plugins, reset_plugins

    installed = [ep for ep in md.entry_points(group="facerep") if ep.name == "farl"]
    plugins = load_plugins(strict=True) if installed else load_plugins(strict=True, extra=[("farl", facerep_farl.plugin)])
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)
