"""The timm adapter: pooled vector, tokens and intermediate layers for CNNs and ViTs."""

from __future__ import annotations

import pytest
import torch

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams


def test_resnet_pooled_tokens_and_stage_maps():
    bb = TimmBackbone(TimmBackboneParams(model="resnet18", layers=(2, 3, 4)))
    out = bb(torch.randn(2, 3, 64, 64))
    assert out.pooled.shape == (2, 512) and bb.embed_dim == 512
    assert [tuple(m.shape) for m in out.layers] == [(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    assert bb.layer_dims == [128, 256, 512]
    assert out.tokens.shape == (2, 4, 512)  # 2x2 final map flattened
    # the pooled vector is the global average of the final map
    torch.testing.assert_close(out.pooled, out.layers[-1].mean((2, 3)))


def test_vit_layers_are_patch_grids_with_cls_tokens():
    bb = TimmBackbone(TimmBackboneParams(model="vit_tiny_patch16_224", img_size=64, patch_size=8, layers=(3, 5, 7, 11)))
    x = torch.randn(2, 3, 64, 64)
    out = bb(x)
    assert out.pooled.shape == (2, 192)
    assert out.tokens.shape == (2, 64, 192)  # 8x8 patches, CLS dropped
    assert [tuple(m.shape) for m in out.layers] == [(2, 192, 8, 8)] * 4
    assert len(out.layer_cls) == 4 and out.layer_cls[0].shape == (2, 192)
    assert bb.layer_dims == [192] * 4
    # the last intermediate layer (block 12, before the final norm) differs from the normed tokens
    assert not torch.allclose(out.layers[-1].flatten(2).transpose(1, 2), out.tokens)


def test_preprocess_normalises_uint8_with_configured_statistics():
    bb = TimmBackbone(TimmBackboneParams(model="resnet10t", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)))
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = bb.preprocess(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))


VIT = {"img_size": 32, "patch_size": 8, "model_kwargs": {"depth": 4}}


@pytest.mark.parametrize("model,kwargs", [("resnet10t", {}), ("vit_tiny_patch16_224", VIT)])
def test_forward_layers_gives_the_layers_of_the_full_forward_and_unpreprocess_inverts(model, kwargs):
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model=model, layers=(1, 2), **kwargs)).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        full = bb(bb.preprocess(x))
        maps, cls = bb.forward_layers(bb.preprocess(x))
    assert len(maps) == 2
    for a, b in zip(maps, full.layers, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(cls, full.layer_cls, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(bb.unpreprocess(bb.preprocess(x)), x.float(), rtol=0, atol=1e-4)


def test_dino_position_resampling_for_smaller_crops():
    """``pos_embed_resample: dino``: at the model's own size nothing changes; for a smaller crop the
    patch positions are DINO's bicubic resampling by (n + 0.1) / n0 without antialiasing (DINO
    vision_transformer.py:174-195), not timm's antialiased resize; an EMA teacher's deepcopy
    resamples its own table."""
    import copy

    import torch.nn.functional as F

    kw = {"model": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 4, "model_kwargs": {"depth": 1, "dynamic_img_size": True}}
    torch.manual_seed(0)
    plain = TimmBackbone(TimmBackboneParams(**kw))
    dino = TimmBackbone(TimmBackboneParams(**kw, pos_embed_resample="dino"))
    dino.load_state_dict(plain.state_dict())
    with torch.no_grad():
        dino.model.pos_embed.normal_()  # a rough table: resampling methods differ clearly
        plain.model.pos_embed.copy_(dino.model.pos_embed)
    x32, x12 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(dino(x32).pooled, plain(x32).pooled)

    tokens = dino.model.patch_embed(x12)  # (B, 3, 3, C) under dynamic_img_size
    pos = dino.model.pos_embed
    grid = pos[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, scale_factor=(3.1 / 8, 3.1 / 8), mode="bicubic", align_corners=False)
    want = torch.cat([pos[:, :1], want.permute(0, 2, 3, 1).reshape(1, 9, -1)], dim=1)
    got = dino.model._pos_embed(tokens)
    expected = torch.cat([dino.model.cls_token.expand(2, -1, -1), tokens.reshape(2, 9, -1)], dim=1) + want
    torch.testing.assert_close(got, expected)
    assert (plain.model._pos_embed(tokens) - got).abs().max() > 0.05  # timm antialiases

    teacher = copy.deepcopy(dino)
    with torch.no_grad():
        teacher.model.pos_embed.zero_()
    assert not torch.allclose(teacher.model._pos_embed(tokens), got)
    torch.testing.assert_close(dino.model._pos_embed(tokens), got)
