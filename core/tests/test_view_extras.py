"""View transforms that return ``Views`` with extras (API 1.2): batched beside the images by the
stream and the data loader, passed to ``Objective.forward(views, extras=...)`` by the training step,
and exercised by the objective contract suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facerep.engine.stream import StreamSampler, ViewStream
from facerep.testing import ObjectiveContract
from facerep.testing.toy import NoiseFaces, NoiseParams, _MaskedViews
from facerep.types import Views, as_views


def test_a_plain_list_is_views_without_extras():
    imgs = [np.zeros((4, 4, 3), np.uint8)]
    v = as_views(imgs)
    assert v.images == imgs and v.extras == {}
    same = Views(images=imgs, extras={"a": np.ones(2)})
    assert as_views(same) is same


def test_the_loader_stacks_extras_beside_the_views_per_sample_position():
    ds = NoiseFaces(NoiseParams(n=6, size=16))
    transform = _MaskedViews(crop=8, patch=4, mask_ratio=0.5)
    stream = ViewStream(ds, transform, seed=2)
    loader = DataLoader(stream, batch_size=3, sampler=StreamSampler(3))
    batch = next(iter(loader))
    assert [tuple(v.shape) for v in batch["views"]] == [(3, 3, 8, 8)] * 2
    mask = batch["extras"]["mask"]
    assert mask.dtype == torch.bool and tuple(mask.shape) == (3, 2, 4)
    assert (mask.sum(-1) == 2).all(), "2 of 4 patches masked in every view"
    for k in range(3):  # sample k of the batch is stream position k, its extras drawn from the same rng
        alone = stream[k]
        assert torch.equal(alone["extras"]["mask"], mask[k]) and torch.equal(alone["views"][0], batch["views"][0][k])
    plain = ViewStream(ds, lambda s, rng: [s.image], seed=2)[0]
    assert set(plain) == {"views"}, "a transform without extras gives what it gave before API 1.2"


def test_the_training_step_passes_extras_and_the_loss_depends_on_them(local_plugins):
    from facerep.engine.model import PretrainModel
    from facerep.testing import build_objective

    obj = build_objective("local.toy_masked", {"crop": 16, "patch": 8, "mask_ratio": 0.5})
    model = PretrainModel(obj)
    stream = ViewStream(NoiseFaces(NoiseParams(n=8, size=24)), obj.view_transform(), seed=0)
    data = next(iter(DataLoader(stream, batch_size=4, sampler=StreamSampler(4))))
    views, extras = model.prepare(data)
    assert extras is not None and extras["mask"].shape == (4, 2, 4)
    with torch.no_grad():
        a = model(views, extras=extras)["loss"]
        b = model(views, extras={"mask": ~extras["mask"]})["loss"]
    assert torch.isfinite(a) and not torch.isclose(a, b), "the objective must read the extras it was given"
    with pytest.raises(ValueError, match="extras"):
        model(views)


def test_objective_manifest_and_extra_exports_reach_the_work_dir(local_plugins, tmp_path, monkeypatch):
    import yaml

    from facerep.run import run
    from facerep.testing.toy import ToyMaskedContrastive

    teacher = {"teacher": {"file": "t.safetensors", "sha256": "ab"}}
    monkeypatch.setattr(ToyMaskedContrastive, "manifest", lambda self: teacher, raising=False)
    monkeypatch.setattr(ToyMaskedContrastive, "exports", lambda self: {"projector": self.projector}, raising=False)
    cfg = {"name": "m", "seed": 0, "data": {"name": "local.noise", "params": {"n": 8, "size": 24}},
           "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
           "objective": {"name": "local.toy_masked", "params": {"crop": 16, "patch": 8}},
           "train": {"max_steps": 1, "batch_size": 4, "log_every": 1, "optimizer": {"type": "sgd", "lr": 0.01}}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run(path, work_dir=tmp_path / "w")
    assert json.loads((tmp_path / "w" / "objective.json").read_text())["teacher"]["sha256"] == "ab"
    assert json.loads(Path(out["backbone"]).with_suffix(".json").read_text())["objective"]["teacher"]["file"] == "t.safetensors"
    from facerep.checkpoint import read_module

    state, meta = read_module(tmp_path / "w" / "projector.safetensors")
    assert set(state) == {"weight", "bias"} and meta["objective"]["params"]["patch"] == 8
    assert meta["backbone_file"] == "backbone.safetensors"


class TestToyWithExtras(ObjectiveContract):
    """The contract suite runs an objective with extras through every check, the runner's included."""

    component = "local.toy_masked"
    params: ClassVar[dict] = {"crop": 24, "patch": 8, "mask_ratio": 0.25}

    @pytest.fixture(autouse=True)
    def _plugins(self, local_plugins):
        yield



def test_read_state_dict_unwraps_and_refuses_pickled_objects(tmp_path):
    import pytest

    from facerep.checkpoint import read_state_dict
    from facerep.errors import DataError

    w = torch.arange(3.0)
    torch.save({"state_dict": {"module.fc.weight": w}}, tmp_path / "a.pth")
    assert list(read_state_dict(tmp_path / "a.pth")) == ["fc.weight"] and torch.equal(read_state_dict(tmp_path / "a.pth")["fc.weight"], w)
    from safetensors.torch import save_file

    save_file({"x": w}, str(tmp_path / "b.safetensors"))
    assert torch.equal(read_state_dict(tmp_path / "b.safetensors")["x"], w)
    torch.save({"model": {"y": w}, "obj": _Pickled()}, tmp_path / "c.pth")
    with pytest.raises(DataError, match=r"c\.pth: not a readable teacher checkpoint"):
        read_state_dict(tmp_path / "c.pth", what="teacher checkpoint")
    with pytest.raises(DataError, match="checkpoint not found"):
        read_state_dict(tmp_path / "missing.pth")


class _Pickled:  # an arbitrary object: weights_only loading must refuse it
    pass
