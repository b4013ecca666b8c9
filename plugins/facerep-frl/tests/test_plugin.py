"""The package as a facerep plugin: a light plugin module, registration, presets, and the
``facerep.testing`` objective contract for both objectives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facerep.testing import ObjectiveContract

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "facerep_frl" / "configs"
PRESETS = ("swav_r50_paper", "moco_v2_r50_paper", "swav_tiny", "moco_v2_tiny")


def test_plugin_module_imports_nothing_heavy():
    code = (
        "import sys, facerep_frl, facerep_frl.plugin as p; "
        "heavy = sorted(m for m in ('torch', 'timm', 'mmengine', 'cv2', 'numpy') if m in sys.modules); "
        "print(','.join(heavy)); "
        "assert p.facerep_plugin_info()['api_version'] and p.facerep_config_paths()[0].is_dir()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"facerep_frl.plugin imported {out.stdout.strip()}"


def test_registers_both_objectives_under_the_frl_namespace(frl_plugins):
    from facerep_frl.moco import MoCoV2Objective, MoCoV2Params
    from facerep_frl.swav import SwAVObjective, SwAVParams

    swav, moco = frl_plugins.get("objective", "frl.swav"), frl_plugins.get("objective", "moco_v2")
    assert (swav.name, moco.name) == ("frl.swav", "frl.moco_v2")
    assert swav.load() is SwAVObjective and swav.load_params() is SwAVParams
    assert moco.load() is MoCoV2Objective and moco.load_params() is MoCoV2Params
    assert {r.name: r.status for r in frl_plugins.records}["frl"] == "loaded"


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_resolve_every_component(frl_plugins, preset):
    from facerep.build import resolve_run
    from facerep.config import load_config

    cfg, _ = load_config(CONFIGS / f"{preset}.yaml")
    resolved = {r.path: r for r in resolve_run(cfg, frl_plugins)}
    assert set(resolved) == {"data", "backbone", "objective"}
    assert cfg.required_plugins == ("facerep-frl",)
    assert cfg.name == preset
    obj, data = resolved["objective"].params, resolved["data"]
    if preset.endswith("paper"):
        assert resolved["backbone"].params.model == "resnet50" and data.spec.name == "core.image_folder"
        assert obj == type(obj)(), "the paper presets spell out the defaults, which are the paper's"
    else:
        assert data.spec.name == "core.synthetic" and cfg.train.max_steps <= 1000
    if preset.startswith("moco"):
        assert obj.queue_size % cfg.train.batch_size == 0
    elif obj.queue_length:
        assert obj.queue_length % cfg.train.batch_size == 0


def test_swav_paper_preset_optimisation_is_bulat_et_al():
    from facerep.config import load_config

    cfg, _ = load_config(CONFIGS / "swav_r50_paper.yaml")
    opt, sched = cfg.train.optimizer, cfg.train.schedule
    assert (opt.type, opt.lr, opt.weight_decay, opt.trust_coefficient, opt.no_decay) == ("lars", 4.8, 1e-6, 0.001, ())
    assert (cfg.train.batch_size, cfg.seed) == (128, 31)
    assert sched.final_factor == pytest.approx(0.0048 / 4.8) and sched.warmup_start_factor == pytest.approx(0.3 / 4.8)


class _Installed:
    @pytest.fixture(autouse=True)
    def _plugins(self, frl_plugins):
        return frl_plugins


class TestSwAVContract(_Installed, ObjectiveContract):
    component = "frl.swav"


class TestMoCoV2Contract(_Installed, ObjectiveContract):
    component = "frl.moco_v2"
