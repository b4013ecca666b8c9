"""The ``core.pixels`` baseline backbone and the linear probe's layout-keeping readouts (issue 8)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from facerep.backbones.pixels import PixelBackbone, PixelsParams
from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.config import ComponentConfig
from facerep.errors import ConfigError
from facerep.eval.label_task import LabelTask
from facerep.eval.linear_probe import LinearProbe, LinearProbeParams, pooled_views, readout
from facerep.eval.protocols import FrozenHead, FrozenHeadParams, PreparedData, _loader, feature_cache
from facerep.types import DatasetInfo, Sample


def _blocks() -> tuple[torch.Tensor, np.ndarray]:
    """A (1, 3, 4, 4) uint8 image of four 2x2 blocks, each with its own (varying) RGB values."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 3, 4, 4)).astype(np.uint8)
    means = img.reshape(1, 3, 2, 2, 2, 2).astype(np.float64).mean((3, 5)) / 255.0  # (1, 3, 2, 2) block means
    return torch.from_numpy(img), means


def test_pixels_are_block_means_of_the_image():
    x, means = _blocks()
    rgb = PixelBackbone(PixelsParams(size=2, grey=False))
    feats = rgb(rgb.preprocess(x))
    assert rgb.embed_dim == 12 and rgb.layer_dims == [3] and feats.tokens is None
    assert feats.pooled.shape == (1, 12) and [tuple(m.shape) for m in feats.layers] == [(1, 3, 2, 2)]
    np.testing.assert_allclose(feats.layers[0].numpy(), means, rtol=1e-6)
    np.testing.assert_allclose(feats.pooled.numpy(), means.reshape(1, -1), rtol=1e-6)

    grey = PixelBackbone(PixelsParams(size=2))
    g = grey(grey.preprocess(x))
    luma = (np.array([0.299, 0.587, 0.114])[None, :, None, None] * means).sum(1, keepdims=True)
    assert grey.embed_dim == 4 and g.pooled.shape == (1, 4)
    np.testing.assert_allclose(g.layers[0].numpy(), luma, rtol=1e-5)
    assert 0.0 <= float(g.pooled.min()) and float(g.pooled.max()) <= 1.0


def test_pixels_default_size_and_pyramid_levels():
    bb = PixelBackbone()
    x = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    f = bb(bb.preprocess(x))
    assert f.pooled.shape == (2, 24 * 24) and f.layers[0].shape == (2, 1, 24, 24)
    pyr = PixelBackbone(PixelsParams(size=8, layers=(0, 1, 3)))
    f = pyr(pyr.preprocess(x))
    assert [m.shape[-1] for m in f.layers] == [8, 4, 1] and pyr.layer_dims == [1, 1, 1]
    np.testing.assert_allclose(f.layers[2].flatten().numpy(), f.layers[0].mean((1, 2, 3)).numpy(), rtol=1e-5)


def test_pixels_have_nothing_to_train_and_export_and_load(tmp_path):
    from facerep.checkpoint import export_backbone, load_backbone

    bb = PixelBackbone(PixelsParams(size=6, grey=False))
    assert sum(p.numel() for p in bb.parameters()) == 0
    assert not any(p.requires_grad for p in bb.parameters())
    path = export_backbone(bb, tmp_path / "backbone.safetensors", backbone=ComponentConfig(name="core.pixels",
                           params={"size": 6, "grey": False}), method="none")
    loaded = load_backbone(path)
    assert isinstance(loaded, PixelBackbone) and loaded.params == bb.params
    x = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    assert torch.equal(loaded(loaded.preprocess(x)).pooled, bb(bb.preprocess(x)).pooled)


class _Grey:
    """Two classes told apart by the brightness of the left half of the image (a layout cue)."""

    def __init__(self, n: int, seed: int, split: str = "train") -> None:
        rng = np.random.default_rng(seed)
        self.y = np.arange(n) % 2
        img = rng.normal(128, 20, (n, 16, 16, 3))
        img[:, :, :8] += np.where(self.y, 60, -60)[:, None, None, None]
        self.images = np.clip(img, 0, 255).astype(np.uint8)
        self.info = DatasetInfo(name="halves", split=split, labels=("expression",), class_names={"expression": ("dark", "light")})

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=self.images[i], expression=int(self.y[i]), meta={"path": f"halves://{i}"})


def test_pixels_work_with_the_linear_probe_and_the_frozen_head():
    train, test = _Grey(40, 0), _Grey(20, 1, split="test")
    task = LabelTask("expression", train, 16)
    bb = PixelBackbone(PixelsParams(size=4))
    lin = LinearProbe(LinearProbeParams(l2_grid=(1e-2,), device="cpu")).run(bb, task, train, test).metrics
    head = FrozenHead(FrozenHeadParams(epochs=40, min_steps=0, lr=1e-2, warmup_epochs=0, device="cpu")).run(bb, task, train, test).metrics
    assert lin["acc"] == 1.0 and head["acc"] >= 0.9


def test_pixels_in_an_evaluate_only_run(tmp_path, local_plugins):
    from facerep.run import run

    cfg = {"name": "pixels", "seed": 0, "backbone": {"name": "core.pixels", "params": {"size": 8}},
           "evaluate": [{"name": "noise", "train": {"name": "local.noise", "params": {"n": 24}},
                         "test": {"name": "local.noise", "params": {"n": 12, "seed": 1}}, "label": "expression",
                         "protocols": [{"name": "core.linear_probe", "params": {"l2_grid": [0.1]}},
                                       {"name": "core.linear_probe", "params": {"l2_grid": [0.1], "readout": "grid2"}},
                                       {"name": "core.frozen_head", "params": {"epochs": 1, "min_steps": 0}}]}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run(path, work_dir=tmp_path / "wd", plugins=local_plugins, evaluate_only=True)
    records = json.loads((tmp_path / "wd" / "results.json").read_text())["results"]
    # the same protocol twice in one entry: labelled by what differs, so reports keep them apart
    assert [r["protocol"] for r in records] == ["core.linear_probe[readout=pooled]", "core.linear_probe[readout=grid2]", "core.frozen_head"]
    summary = (tmp_path / "wd" / "results.md").read_text()
    assert "core.linear_probe[readout=grid2]" in summary and "core.linear_probe[readout=pooled]" in summary
    dims = [r["metrics"].get("dim") for r in records[:2]]
    assert dims == [64.0, 4.0]  # pooled 8x8 grey pixels; grid2 of the one 8x8 map
    # named for what it is: pixels have no weights, random or not
    assert {r["weights"] for r in records} == {"core.pixels (no weights)"} and "random init" not in summary


def _features(bb, n: int = 2, size: int = 32):
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        return bb(bb.preprocess(x))


def test_readout_shapes_for_a_resnet():
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model="resnet18", layers=(1, 2, 3, 4))).eval()
    f = _features(bb)
    dims = bb.layer_dims
    assert dims == [64, 128, 256, 512]
    assert readout(f, "pooled") is f.pooled
    assert readout(f, "layers_mean").shape == (2, sum(dims))
    assert readout(f, "grid2").shape == (2, 4 * sum(dims))
    assert readout(f, "grid4").shape == (2, 16 * sum(dims))
    np.testing.assert_allclose(readout(f, "grid1").numpy(), readout(f, "layers_mean").numpy(), rtol=1e-5, atol=1e-6)
    # stage 4 is the pooled map: its global mean is the pooled vector
    np.testing.assert_allclose(readout(f, "layers_mean")[:, -512:].numpy(), f.pooled.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=r"protocol\.params\.readout: 'cls_mean' needs a CLS token"):
        readout(f, "cls_mean")
    plain = _features(TimmBackbone(TimmBackboneParams(model="resnet10t")).eval())
    with pytest.raises(ConfigError, match=r"protocol\.params\.readout: 'grid2' .*backbone_layers"):
        readout(plain, "grid2")


def test_readout_shapes_for_a_tiny_vit():
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model="vit_tiny_patch16_224", img_size=32, patch_size=8, layers=(1, 3),
                                         model_kwargs={"depth": 4})).eval()
    f = _features(bb)
    d = bb.embed_dim  # 192
    assert readout(f, "cls_mean").shape == (2, 2 * 2 * d)
    assert readout(f, "layers_mean").shape == (2, 2 * d)
    assert readout(f, "grid2").shape == (2, 2 * 4 * d)
    cm = readout(f, "cls_mean")
    torch.testing.assert_close(cm[:, :d], f.layer_cls[0])
    torch.testing.assert_close(cm[:, d : 2 * d], f.layers[0].mean((2, 3)))


def test_pooled_readout_is_the_default_and_unchanged():
    from facerep.data.subset import Subset

    assert LinearProbeParams().readout == "pooled"
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model="resnet10t", layers=(2, 3))).eval()
    train = _Grey(12, 0)
    task = LabelTask("expression", train, 16)
    (views,), _ = pooled_views(bb, task, train, LinearProbeParams(batch_size=5))
    with torch.no_grad():  # what pooled_views computed before readouts existed
        ref = np.concatenate([bb(bb.preprocess(images)).pooled.float().numpy()
                              for images, _, _ in _loader(PreparedData(task, train, train=False), 5, 0)])
    np.testing.assert_array_equal(views, ref)
    # within one feature cache, readouts do not collide and pooled equals the uncached rows
    with feature_cache():
        (a,), _ = pooled_views(bb, task, train, LinearProbeParams(batch_size=5))
        (g,), _ = pooled_views(bb, task, Subset(train, np.arange(6)), LinearProbeParams(readout="grid2"))
        (m,), _ = pooled_views(bb, task, train, LinearProbeParams(readout="layers_mean"))
    assert a.shape == ref.shape and g.shape == (6, 4 * sum(bb.layer_dims)) and m.shape == (12, sum(bb.layer_dims))
    np.testing.assert_array_equal(a, ref)


def test_unknown_readout_is_a_config_error_naming_the_field():
    from facerep.build import resolve

    for bad in ("grid", "grid0", "gridx", "mean", "Pooled"):
        with pytest.raises(ConfigError, match=r"protocol\.params\.readout: unknown readout"):
            LinearProbeParams(readout=bad)
    with pytest.raises(ConfigError, match=r"protocol\.params\.readout: unknown readout 'grid_4'"):
        resolve("protocol", ComponentConfig(name="core.linear_probe", params={"readout": "grid_4"}), "evaluate.0.protocol")
    assert LinearProbeParams(readout="grid7").readout == "grid7"


def test_non_pooled_readout_on_a_task_without_probe_label_is_refused():
    train, test = _Grey(8, 0), _Grey(4, 1, split="test")
    task = LabelTask("expression", train, 16)
    task.probe_label = None
    with pytest.raises(ConfigError, match=r"protocol\.params\.readout: 'grid2' applies to the closed-form probe"):
        LinearProbe(LinearProbeParams(readout="grid2", device="cpu")).run(PixelBackbone(), task, train, test)
