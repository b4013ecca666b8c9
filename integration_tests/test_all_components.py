"""Every objective registered by the installed plugins passes facerep's contract suite
(timm's `test_models.py` idea: a new component is covered without writing a test for it)."""

from __future__ import annotations

import pytest

from facerep.plugins import load_plugins
from facerep.testing.contracts import ObjectiveContract

# MCF's tiny params use a seeded random teacher on purpose; the warning is meant for real runs.
pytestmark = pytest.mark.filterwarnings("ignore:MCF teacher .* has random weights")

OBJECTIVES = [spec.name for spec in load_plugins().registry.specs("objective")]


def test_the_installed_plugins_register_objectives():
    assert "frl.swav" in OBJECTIVES and "frl.moco_v2" in OBJECTIVES


@pytest.fixture(params=OBJECTIVES)
def objective_name(request, facerep_plugins):
    return request.param


class TestEveryObjective(ObjectiveContract):
    """Runs each contract test once per registered objective."""

    @pytest.fixture(autouse=True)
    def _component(self, objective_name):
        self.component = objective_name
