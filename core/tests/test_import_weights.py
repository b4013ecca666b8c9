"""``facerep import-weights``: released state dicts (FRL's ``module.base_net.`` ResNet-50, a bare
torchvision or timm state dict) become a facerep backbone whose features equal the source model's;
pickled code and weights that do not fit are refused with the file named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from facerep.checkpoint import import_state_dict, load_backbone
from facerep.errors import DataError


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FACEREP_")}, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "facerep", "import-weights", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    for m in net.modules():  # non-trivial BatchNorm statistics, so that a buffer left behind shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _reference(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    fc, net.fc = net.fc, torch.nn.Identity()
    try:
        with torch.no_grad():
            return net(x)
    finally:
        net.fc = fc


def test_frl_swav_layout_imports_through_the_cli_with_equal_features(resnet50, tmp_path):
    state = {f"module.base_net.{k}": v for k, v in resnet50.state_dict().items()}
    state["module.projection_head.0.weight"] = torch.randn(8, 2048)  # SwAV's head and prototypes: not backbone
    state["module.prototypes.weight"] = torch.randn(16, 8)
    torch.save({"epoch": 100, "state_dict": state}, tmp_path / "swav_frl.pth")
    res = _cli("swav_frl.pth", "-p", "model=resnet50", "-o", "w/backbone.safetensors", "--json", "r.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    # read_state_dict removes DDP's "module.", the import then finds FRL's "base_net."
    assert report["prefix"] == "base_net." and "fc.weight" in report["left_out"]
    assert report["ignored_outside_prefix"] == 2  # projection head + prototypes
    side = json.loads((tmp_path / "w/backbone.json").read_text())
    assert side["backbone"] == {"name": "core.timm", "params": {"model": "resnet50"}} and side["method"] == "imported"
    backbone = load_backbone(tmp_path / "w/backbone.safetensors").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = backbone(x).pooled
    torch.testing.assert_close(ours, _reference(resnet50, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["torchvision", "timm_module"])
def test_plain_torchvision_and_timm_state_dicts_import(resnet50, layout, tmp_path):
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams

    state = resnet50.state_dict()
    if layout == "timm_module":  # a timm model saved by a DDP trainer: timm keys (no fc) under "module."
        state = {f"module.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    target = TimmBackbone(TimmBackboneParams(model="resnet50")).eval()
    report = import_state_dict(target, state, source=f"{layout}.pth")
    assert report["loaded"] == len(target.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x).pooled, _reference(resnet50, x), atol=1e-5, rtol=0)


def test_pickled_code_and_misfits_are_refused_with_the_file_named(resnet50, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"state_dict": resnet50.state_dict(), "extra": Payload()}, tmp_path / "evil.pth")
    res = _cli("evil.pth", "-p", "model=resnet50", "-o", "w/backbone.safetensors", cwd=tmp_path)
    assert res.returncode != 0 and "evil.pth" in res.stderr and "pickled" in res.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "w").exists()
    torch.save(resnet50.state_dict(), tmp_path / "r50.pth")
    res = _cli("r50.pth", "-p", "model=resnet18", "-o", "w/backbone.safetensors", cwd=tmp_path)
    assert res.returncode != 0 and "r50.pth: does not fit the backbone" in res.stderr and "layer1.0.conv1.weight" in res.stderr
    with pytest.raises(DataError, match=r"other\.pth: none of its 1 tensors .* give --prefix"):
        from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams

        import_state_dict(TimmBackbone(TimmBackboneParams(model="resnet18")), {"encoder.stem.w": torch.zeros(1)}, source="other.pth")
