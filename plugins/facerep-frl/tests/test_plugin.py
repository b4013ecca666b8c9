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
PRESETS = ("swav_r50_paper", "moco_v2_r50_paper", "moco_frl_r50_paper", "swav_tiny", "moco_v2_tiny")


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
        if preset == "moco_frl_r50_paper":  # FRL's code defaults, not MoCo-v2's
            frl = (obj.temperature, obj.hidden_dim, obj.crop_scale, obj.color.brightness, obj.color.hue)
            assert frl == (0.07, 0, (0.14, 1.0), 0.8, 0.2)
        else:
            assert obj == type(obj)(), "the paper presets spell out the defaults, which are the paper's"
        # none of the official ResNet-50s zero-initialises the last BN of a residual branch
        assert resolved["backbone"].params.model_kwargs == {"zero_init_last": False}
    else:
        assert data.spec.name == "core.synthetic" and cfg.train.max_steps <= 1000
    if preset.startswith("moco"):
        assert obj.queue_size % cfg.train.batch_size == 0
    elif obj.queue_length:
        assert obj.queue_length % cfg.train.batch_size == 0


@pytest.mark.parametrize(("preset", "precision", "sync_bn", "red_std"), [
    ("swav_r50_paper", "fp16", True, 0.228),      # run.sh --use_fp16 true --sync_bn apex; unsupervised_dataset.py:35
    ("moco_frl_r50_paper", "fp16", True, 0.228),  # main.py defaults --use_fp16 true --sync_bn pytorch
    ("moco_v2_r50_paper", "fp32", False, 0.229),  # main_moco.py: no AMP, no SyncBN (shuffling BN), ImageNet std
])
def test_paper_presets_precision_batch_norm_and_normalisation(preset, precision, sync_bn, red_std):
    from facerep.config import load_config

    cfg, _ = load_config(CONFIGS / f"{preset}.yaml")
    assert (cfg.train.precision, cfg.train.sync_bn) == (precision, sync_bn)
    assert (cfg.backbone.params.get("std") or [0.229])[0] == red_std


def test_moco_frl_preset_is_frl_main_py_defaults():
    from facerep.config import load_config

    cfg, _ = load_config(CONFIGS / "moco_frl_r50_paper.yaml")
    opt, sched = cfg.train.optimizer, cfg.train.schedule
    assert (opt.type, opt.lr, opt.weight_decay, opt.momentum, opt.no_decay) == ("sgd", 4.8, 1e-6, 0.9, ())
    assert (sched.warmup_start_factor, sched.final_factor, sched.warmup_peak) == (0.0, 0.0, "last_warmup_step")
    assert sched.warmup_steps * 10 == pytest.approx(cfg.train.max_steps, abs=10)  # 10 of 100 epochs
    assert (cfg.train.batch_size, cfg.seed) == (64, 31)


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
