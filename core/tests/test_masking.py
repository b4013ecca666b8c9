"""Patch masks (exact ratios, seeded) and the masked forward of a timm ViT backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerep.backbones.masking import block_mask, keep_indices, random_mask, vit_grid, vit_tokens
from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.errors import ConfigError


@pytest.mark.parametrize("n,ratio", [(196, 0.75), (64, 0.75), (49, 0.5), (16, 0.0)])
def test_random_mask_has_the_configured_ratio_and_varies_with_the_rng(n, ratio):
    masks = [random_mask(np.random.default_rng(s), n, ratio) for s in range(20)]
    assert all(m.dtype == bool and m.shape == (n,) and m.sum() == round(ratio * n) for m in masks)
    if 0 < ratio:
        assert len({m.tobytes() for m in masks}) == 20
        assert np.array_equal(masks[3], random_mask(np.random.default_rng(3), n, ratio))
        freq = np.mean(masks, 0)  # every position is masked sometimes
        assert (freq > 0).all()


@pytest.mark.parametrize("grid,ratio", [((14, 14), 0.4), ((8, 8), 0.4), ((7, 9), 0.3), ((4, 4), 0.5)])
def test_block_mask_has_the_exact_count_and_is_made_of_blocks(grid, ratio):
    n = grid[0] * grid[1]
    for seed in range(30):
        m = block_mask(np.random.default_rng(seed), grid, ratio)
        assert m.shape == (n,) and m.sum() == round(ratio * n)
    # blockwise, not scattered: masked patches have more masked 4-neighbours than a random mask's
    def neighbours(mask):
        g = mask.reshape(grid)
        same = (g[1:] & g[:-1]).sum() + (g[:, 1:] & g[:, :-1]).sum()
        return same / max(g.sum(), 1)
    blocks = np.mean([neighbours(block_mask(np.random.default_rng(s), grid, ratio)) for s in range(50)])
    scattered = np.mean([neighbours(random_mask(np.random.default_rng(s), n, ratio)) for s in range(50)])
    assert blocks > scattered + 0.3


def test_keep_indices_are_the_visible_patches_in_order():
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    assert keep_indices(mask).tolist() == [[1, 3], [0, 1]]
    with pytest.raises(ValueError, match="same number"):
        keep_indices(torch.tensor([[True, False], [False, False]]))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model="vit_tiny_patch16_224", img_size=32, patch_size=8, model_kwargs={"depth": 2}))
    return bb.eval()


def test_unmasked_tokens_equal_the_backbone_forward(vit):
    x = torch.randn(2, 3, 32, 32)
    assert vit_grid(vit) == (4, 4)
    with torch.no_grad():
        torch.testing.assert_close(vit_tokens(vit, x), vit.model.forward_features(x))


def test_dropping_patches_equals_running_the_visible_tokens_alone(vit):
    x = torch.randn(2, 3, 32, 32)
    mask = torch.from_numpy(np.stack([random_mask(np.random.default_rng(s), 16, 0.75) for s in range(2)]))
    keep = keep_indices(mask)
    with torch.no_grad():
        out = vit_tokens(vit, x, keep=keep)
        assert out.shape == (2, 1 + 4, 192)
        # reference: embed, add positions, then keep CLS + visible tokens by hand
        m = vit.model
        t = m._pos_embed(m.patch_embed(x))
        ref = torch.stack([m.norm(m.blocks(torch.cat([t[i, :1], t[i, 1:][keep[i]]])[None]))[0] for i in range(2)])
        torch.testing.assert_close(out, ref)
        # a masked patch's content does not reach the output
        x2 = x.clone()
        row, col = divmod(int(torch.nonzero(mask[0])[0]), 4)
        x2[0, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 5.0
        torch.testing.assert_close(vit_tokens(vit, x2, keep=keep), out)


def test_mask_tokens_replace_the_masked_patch_embeddings(vit):
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, [0, 5, 6]] = True
    token = torch.randn(192)
    with torch.no_grad():
        out = vit_tokens(vit, x, mask=mask, mask_token=token)
        assert out.shape == (2, 17, 192)
        x2 = x.clone()
        x2[:, :, 0:8, 0:8] = 9.0  # patch 0 is masked: its pixels are never seen
        torch.testing.assert_close(vit_tokens(vit, x2, mask=mask, mask_token=token), out)
        assert not torch.allclose(vit_tokens(vit, x2), vit_tokens(vit, x))


def test_a_cnn_backbone_is_refused_with_a_config_error():
    with pytest.raises(ConfigError, match="needs a timm ViT"):
        vit_tokens(TimmBackbone(TimmBackboneParams(model="resnet10t")), torch.randn(1, 3, 32, 32))
