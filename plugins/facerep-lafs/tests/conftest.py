"""``lafs_plugins``: ``lafs.*`` resolvable whether or not the distribution is pip-installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facerep.testing.plugin import plugins_including

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules, also for spawned processes
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def lafs_plugins():
    import facerep_lafs.plugin

    yield from plugins_including("lafs", facerep_lafs.plugin)
