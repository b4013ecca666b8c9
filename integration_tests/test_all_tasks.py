"""Every task registered by the installed plugins passes core's task contract (prepare, head,
frozen and linear protocols) on synthetic faces."""

from __future__ import annotations

import pytest

from facerep.plugins import load_plugins
from facerep.testing import TaskContract

TASKS = [spec.name for spec in load_plugins().registry.specs("task")]


@pytest.fixture(params=TASKS)
def task_name(request, facerep_plugins):
    return request.param


class TestEveryTask(TaskContract):
    """Runs each contract test once per registered task."""

    @pytest.fixture(autouse=True)
    def _component(self, task_name):
        self.component = task_name
