"""Pretraining runner: a short run trains and exports; resume is exact; checkpoints are safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from facerep.run import run

CONFIG = {
    "name": "toy",
    "seed": 3,
    "data": {"name": "local.noise"},
    "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
    "objective": {"name": "local.toy", "params": {"crop": 24}},
    "train": {
        "max_steps": 6,
        "batch_size": 8,
        "optimizer": {"type": "sgd", "lr": 0.05, "weight_decay": 1e-4},
        "schedule": {"warmup_steps": 2, "final_weight_decay": 1e-3},
        "log_every": 1,
        "checkpoint_every": 3,
        "channels_last": False,
    },
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_short_run_writes_work_dir_and_exports_backbone(tmp_path, local_plugins):
    cfg = _write(tmp_path, CONFIG)
    summary = run(cfg, work_dir=tmp_path / "wd", plugins=local_plugins)
    wd = tmp_path / "wd"
    assert (wd / "config.yaml").is_file() and (wd / "plugins.json").is_file()
    manifest = json.loads((wd / "plugins.json").read_text())
    assert {"core", "local"} <= {p["name"] for p in manifest}
    env = json.loads((wd / "environment.json").read_text())
    assert env["git"]
    weights = load_file(summary["backbone"])
    side = json.loads(Path(summary["backbone"]).with_suffix(".json").read_text())
    assert side["backbone"]["name"] == "core.timm" and side["method"] == "local.toy"
    assert any(k.startswith("model.") for k in weights)


def test_resume_matches_uninterrupted_run(tmp_path, local_plugins):
    cfg = _write(tmp_path, CONFIG)
    full = run(cfg, work_dir=tmp_path / "full", plugins=local_plugins)
    part = run(cfg, work_dir=tmp_path / "part", plugins=local_plugins, stop_after=3)
    assert "backbone" not in part
    assert (tmp_path / "part" / "iter_3.pth").is_file()
    resumed = run(cfg, work_dir=tmp_path / "part", plugins=local_plugins, resume=True)
    a, b = load_file(full["backbone"]), load_file(resumed["backbone"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # and the run actually trained: weights differ from a fresh initialisation
    torch.manual_seed(3)
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams

    fresh = TimmBackbone(TimmBackboneParams(model="resnet10t")).state_dict()
    assert any(not torch.equal(fresh[k], a[k]) for k in a if a[k].is_floating_point())


def test_checkpoint_is_loaded_without_unpickling_code(tmp_path, local_plugins):
    cfg = _write(tmp_path, CONFIG)
    run(cfg, work_dir=tmp_path / "wd", plugins=local_plugins)
    ckpt = tmp_path / "wd" / "iter_6.pth"
    from facerep.checkpoint import safe_checkpoint_loading

    state = torch.load(ckpt, weights_only=True)  # tensors and plain data only: no allow-list needed
    assert state["meta"]["iter"] == 6
    assert state["meta"]["facerep_plugins"][0]["name"] == "core"
    losses = state["message_hub"]["log_scalars"]["train/loss"]
    assert len(losses["log"]) == 6 and all(isinstance(v, float) for v in losses["log"])
    # a checkpoint carrying an arbitrary object is refused even inside the context
    evil = tmp_path / "evil.pth"
    torch.save({"x": Path("/etc/passwd")}, evil)
    with safe_checkpoint_loading(), pytest.raises(Exception, match=r"weights_only|Unsupported global"):
        torch.load(evil)


def test_loader_workers_with_a_preloaded_folder_train(tmp_path):
    """The experiments' data path: decoded-once images, one loader worker (forked after the
    threaded preload). A subprocess with a timeout, so that a stuck worker fails the test instead
    of hanging the suite."""
    import subprocess
    import sys

    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(12):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    cfg = dict(CONFIG, data={"name": "core.image_folder", "params": {"roots": [str(tmp_path / "img")], "resize": 32, "preload": True}},
               objective={"name": "local.toy", "params": {"crop": 24}})
    cfg["train"] = dict(CONFIG["train"], num_workers=1, max_steps=3, checkpoint_every=0)
    cfg["data"]["name"] = "core.image_folder"
    path = _write(tmp_path, cfg)
    here, cfg_path, work_dir = str(Path(__file__).parent), str(path), str(tmp_path / "wd")
    code = (
        f"import sys; sys.path.insert(0, {here!r}); from conftest import _local_plugin\n"
        "from facerep.plugins import load_plugins; from facerep.run import run\n"
        f"run({cfg_path!r}, work_dir={work_dir!r}, plugins=load_plugins(entry_points=[], extra=[('local', _local_plugin())]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "wd" / "backbone.safetensors").is_file()
