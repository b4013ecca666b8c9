"""Shared fixtures of the facerep-frl tests.

``frl_plugins`` makes ``frl.swav`` / ``frl.moco_v2`` resolvable whether or not the distribution is
pip-installed: the installed entry point when there is one, else the plugin module registered
directly (a source checkout on ``PYTHONPATH``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facerep.testing.plugin import plugins_including

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules (_frl_helpers), also for spawned processes
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def frl_plugins():
    import facerep_frl.plugin

    yield from plugins_including("frl", facerep_frl.plugin)
