"""A third-party plugin, pip-installed beside core, works end to end with no change to core:
it is discovered through its entry point, listed with its distribution, checked, and trained."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(
    not __import__("importlib.util").util.find_spec("facerep_example_objective"),
    reason="integration_tests/plugins/facerep-example-objective is not installed (pip install -e it)",
)


def test_facerep_list_shows_the_plugin_component_with_its_distribution(tmp_path, helpers):
    res = helpers.run("list", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert components["objective"]["example.vicreg"] == "facerep-example-objective 0.1.0"
    assert plugins["example"]["dist"] == "facerep-example-objective 0.1.0"
    assert plugins["example"]["status"] == "loaded"
    assert plugins["example"]["note"] == "example third-party plugin: VICReg (Bardes et al. 2022)"
    assert plugins["core"] == {"dist": "facerep-core 0.1.0", "status": "loaded", "note": "core built-ins"}
    # core's own components are still there, still credited to core
    assert components["backbone"]["core.timm"] == "facerep-core 0.1.0"
    assert "was skipped" not in res.stderr


def test_facerep_run_trains_the_plugin_objective_and_exports_the_backbone(tmp_path, helpers):
    cfg = helpers.write_yaml(tmp_path / "vicreg.yaml", helpers.vicreg_run_config())
    wd = tmp_path / "wd"
    res = helpers.run("run", cfg, "--work-dir", wd, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    # the component table credits the plugin's distribution
    rows = [line.split() for line in res.stdout.splitlines()]
    assert ["objective", "objective", "example.vicreg", "facerep-example-objective", "0.1.0"] in rows
    assert ["backbone", "backbone", "core.timm", "facerep-core", "0.1.0"] in rows

    # exported weights: safetensors (no pickle) + a sidecar naming the plugin's method
    weights = wd / "backbone.safetensors"
    with safe_open(str(weights), "pt") as f:
        assert f.metadata()["format"] == "facerep.backbone/1"
    state = load_file(str(weights))
    assert state and all(k.startswith("model.") for k in state)
    side = json.loads(weights.with_suffix(".json").read_text())
    assert side["method"] == "example.vicreg"
    assert side["backbone"] == {"name": "core.timm", "params": {"model": "resnet10t"}}
    assert side["steps"] == 3

    # the run record names the plugin's distribution and version
    manifest = {p["name"]: p for p in json.loads((wd / "plugins.json").read_text())}
    assert (manifest["example"]["dist"], manifest["example"]["version"], manifest["example"]["status"]) == (
        "facerep-example-objective", "0.1.0", "loaded")

    # it really trained with the plugin's loss: 3 steps logged with the VICReg terms
    ckpt = torch.load(wd / "iter_3.pth", weights_only=True)
    scalars = ckpt["message_hub"]["log_scalars"]
    assert len(scalars["train/loss"]["log"]) == 3
    for term in ("invariance", "variance", "covariance"):
        assert len(scalars[f"train/{term}"]["log"]) == 3, term
    losses = scalars["train/loss"]["log"]
    assert all(v == v and v > 0 for v in losses)  # finite, positive


def test_plugins_check_expecting_the_plugin_passes(tmp_path, helpers):
    res = helpers.run("plugins", "check", "--expect", "example", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("facerep plugins check: ok:")
    loaded = res.stdout.split("(", 1)[1].split(")", 1)[0].split(", ")
    assert {"core", "example"} <= set(loaded)


def test_plugins_check_fails_when_an_expected_plugin_is_missing(capsys, facerep_plugins):
    from facerep.cli import main

    assert main(["plugins", "check", "--expect", "example", "--expect", "nosuchplugin"]) == 1
    err = capsys.readouterr().err
    assert "expected plugin 'nosuchplugin' is not loaded" in err
    assert "expected plugin 'example'" not in err
    assert "1 problem(s)" in err


def test_the_plugin_preset_is_run_by_plugin_name(capsys, facerep_plugins):
    from facerep.cli import main

    assert main(["run", "example/vicreg_synthetic", "--dry-run", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert ["objective", "objective", "example.vicreg", "facerep-example-objective", "0.1.0"] in [line.split() for line in out.splitlines()]
    # an unknown preset lists the known ones
    assert main(["run", "example/no_such_preset"]) == 2
    err = capsys.readouterr().err
    assert "config not found: example/no_such_preset" in err and "example/vicreg_synthetic" in err
