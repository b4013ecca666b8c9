"""Shared fixtures of the facerep-frl tests.

``frl_plugins`` makes ``frl.swav`` / ``frl.moco_v2`` resolvable whether or not the distribution is
pip-installed: the installed entry point when there is one, else the plugin module registered
directly (a source checkout on ``PYTHONPATH``).
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules (_frl_helpers), also for spawned processes
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def frl_plugins():
    import facerep_frl.plugin
    from facerep.plugins import load_plugins, reset_plugins

    installed = [ep for ep in md.entry_points(group="facerep") if ep.name == "frl"]
    plugins = load_plugins(strict=True) if installed else load_plugins(strict=True, extra=[("frl", facerep_frl.plugin)])
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)
