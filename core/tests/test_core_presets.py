"""Core's presets: ``core/vit_cpu``, the CPU-sized ViT that method presets build on."""

from __future__ import annotations

import torch
import yaml

from facerep.build import build, resolve
from facerep.config import find_config, load_config
from facerep.plugins import get_plugins


def test_vit_cpu_is_a_core_preset_that_a_config_extends(tmp_path):
    assert find_config("core/vit_cpu").name == "vit_cpu.yaml"
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "core/vit_cpu", "name": "child", "train": {"max_steps": 7}}))
    cfg, _ = load_config(child)
    assert (cfg.name, cfg.train.max_steps, cfg.train.batch_size, cfg.train.precision) == ("child", 7, 128, "bf16")
    assert cfg.train.optimizer.type == "adamw"
    backbone = build(resolve("backbone", cfg.backbone, "backbone", get_plugins()))
    assert len(backbone.model.blocks) == 6 and backbone.embed_dim == 192
    feats = backbone(torch.zeros(2, 3, 64, 64))
    assert feats.pooled.shape == (2, 192)
    assert [tuple(m.shape) for m in feats.layers] == [(2, 192, 8, 8)] * 3, "8 px patches at 64 px: an 8 x 8 token grid, blocks 1/3/5"
    assert sum(p.numel() for p in backbone.parameters()) < 3_000_000
