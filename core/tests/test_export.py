"""``facerep export``: a backbone in timm's / the Hugging Face Hub's layout that timm loads offline
with features identical to facerep's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.checkpoint import export_backbone, export_module, load_backbone, read_module
from facerep.config import ComponentConfig


def _work_dir(tmp_path, params: dict, view_size: int):
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(**params))
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, as after training
        for m in bb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    wd = tmp_path / "run"
    export_backbone(bb, wd / "backbone.safetensors", backbone=ComponentConfig("core.timm", params), method="frl.moco_v2")
    (wd / "config.yaml").write_text(yaml.safe_dump({"name": "moco_faces", "data": {"name": "core.image_folder"},
                                                    "objective": {"name": "frl.moco_v2", "params": {"view_size": view_size}},
                                                    "train": {"max_steps": 300, "batch_size": 128, "precision": "fp32"}}))
    (wd / "plugins.json").write_text(json.dumps([{"name": "facerep-frl", "version": "0.1.0"}]))
    export_module(torch.nn.Linear(4, 2), wd / "joint_embedding.safetensors", {"what": "a method's extra module (FaRL's text side)"})
    return wd


def _facerep(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "facerep", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize(("params", "size"), [
    ({"model": "resnet10t"}, 64),
    ({"model": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "model_kwargs": {"depth": 2}}, 32),
])
def test_export_loads_in_timm_with_identical_features(tmp_path, params, size):
    import timm

    wd = _work_dir(tmp_path, params, size)
    out = tmp_path / "hub"
    res = _facerep("export", wd, out, "--license", "cc-by-nc-4.0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == params["model"] and cfg["pretrained_cfg"]["input_size"] == [3, size, size]
    assert cfg["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406] and cfg["num_features"] > 0
    model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=0, **cfg.get("model_args", {}),
                              pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"))).eval()
    ours = load_backbone(wd / "backbone.safetensors").eval()
    x = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        want = ours(ours.preprocess(x)).pooled
        mean, std = (torch.tensor(cfg["pretrained_cfg"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        got = model((x.float() / 255 - mean) / std)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "frl.moco_v2" in card and "max_steps 300" in card and "facerep-frl 0.1.0" in card
    assert "upload_folder" in card
    state, meta = read_module(out / "extras" / "joint_embedding.safetensors")  # kept beside, readable as facerep wrote it
    assert state["weight"].shape == (2, 4) and meta["what"].startswith("a method's extra")


def test_export_refuses_what_timm_cannot_hold_and_keeps_an_existing_folder(tmp_path):
    wd = tmp_path / "px"
    from facerep.backbones.pixels import PixelBackbone, PixelsParams

    export_backbone(PixelBackbone(PixelsParams()), wd / "backbone.safetensors", backbone=ComponentConfig("core.pixels", {}), method="none")
    res = _facerep("export", wd, tmp_path / "o", cwd=tmp_path)
    assert res.returncode != 0 and "not a timm model" in res.stderr and "Traceback" not in res.stderr
    res = _facerep("export", tmp_path / "nowhere", tmp_path / "o", cwd=tmp_path)
    assert res.returncode != 0 and "no backbone.safetensors" in res.stderr
    good = _work_dir(tmp_path, {"model": "resnet10t"}, 64)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    res = _facerep("export", good, tmp_path / "full", cwd=tmp_path)
    assert res.returncode != 0 and "--overwrite" in res.stderr and (tmp_path / "full" / "keep.txt").read_text() == "mine"
