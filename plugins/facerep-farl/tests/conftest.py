"""``farl_plugins``: ``farl.*`` resolvable whether or not the distribution is pip-installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facerep.testing.plugin import plugins_including

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules, also for spawned processes
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def farl_plugins():
    import facerep_farl.plugin

    yield from plugins_including("farl", facerep_farl.plugin)
