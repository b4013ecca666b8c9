"""Every task registered by the installed plugins passes core's task contract (prepare, head,
frozen and linear protocols) on synthetic faces."""

from __future__ import annotations

import pytest

from facerep.plugins import load_plugins
from facerep.testing import TaskContract

# tasks whose targets the synthetic contract faces do not carry (valence/arousal, depth and yaw) run
# the contract in their own plugin's tests, on datasets that carry them
OWN_CONTRACT_DATA = {"expression.valence_arousal", "face3d.alignment"}
TASKS = [spec.name for spec in load_plugins().registry.specs("task") if spec.name not in OWN_CONTRACT_DATA]


@pytest.fixture(params=TASKS)
def task_name(request, facerep_plugins):
    return request.param


class TestEveryTask(TaskContract):
    """Runs each contract test once per registered task."""

    @pytest.fixture(autouse=True)
    def _component(self, task_name):
        self.component = task_name
