"""Every preset an installed plugin ships resolves: ``facerep run <plugin>/<preset> --dry-run``
structures every component's params (a renamed field or a bad value in a preset fails here, not
on a user's GPU hours later). Nothing is built or read."""

from __future__ import annotations

from pathlib import Path

import pytest

from facerep.cli import main
from facerep.config import read_yaml
from facerep.plugins import get_plugins


def _presets() -> list[str]:
    """Runnable presets (a base such as ``core/vit_cpu``, without an objective, is only extended)."""
    hook = get_plugins().manager.hook.facerep_config_paths
    return sorted(f"{impl.plugin_name}/{f.stem}" for impl in hook.get_hookimpls() for folder in impl.function() or []
                  for f in Path(folder).glob("*.yaml") if "objective" in read_yaml(f))


PRESETS = _presets()


def test_the_method_plugins_ship_a_paper_and_a_cpu_preset_each():
    for method, paper, cpu in [("frl", "swav_r50_paper", "swav_tiny"), ("farl", "farl_vit_b16_paper", "farl_vit_cpu"),
                               ("mcf", "mcf_vit_b16_paper", "mcf_vit_cpu"), ("pros", "pros_vit_b16_paper", "pros_vit_cpu"),
                               ("lafs", "lafs_vit_b16_paper", "lafs_vit_cpu")]:
        if any(p.startswith(f"{method}/") for p in PRESETS):
            assert {f"{method}/{paper}", f"{method}/{cpu}"} <= set(PRESETS), method


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_resolves(preset, capsys):
    assert main(["run", preset, "--dry-run", "--no-cost"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "objective" in out and "backbone" in out
