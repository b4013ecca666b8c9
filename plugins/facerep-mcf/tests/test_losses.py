"""MCF's loss terms against values computed by hand (specs/methods.md §3.3)."""

from __future__ import annotations

import math

import numpy as np
import torch

from facerep_mcf.decoder import MAEDecoder, unpatchify
from facerep_mcf.losses import feature_reconstruction_loss, masked_pair_contrastive_loss


def test_feature_loss_normalises_along_the_token_axis_as_the_official_code():
    # one layer, B=1, T=2 tokens, C=2 channels
    r = torch.tensor([[[3.0, 0.0], [4.0, 1.0]]])
    t = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    # tokens axis: column c of r is normalised over the 2 tokens: (3,4)/5 and (0,1)/1
    rn = [[0.6, 0.0], [0.8, 1.0]]
    tn = [[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]
    want = np.mean([(rn[i][j] - tn[i][j]) ** 2 for i in range(2) for j in range(2)])
    assert math.isclose(float(feature_reconstruction_loss([r], [t])), want, rel_tol=1e-6)
    # channels axis: each token normalised over its 2 channels
    rn = [[1.0, 0.0], [4 / math.sqrt(17), 1 / math.sqrt(17)]]
    tn = [[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]
    want = np.mean([(rn[i][j] - tn[i][j]) ** 2 for i in range(2) for j in range(2)])
    assert math.isclose(float(feature_reconstruction_loss([r], [t], axis="channels")), want, rel_tol=1e-6)
    # layers add up; the target gets no gradient
    r2 = r.clone().requires_grad_(True)
    t2 = t.clone().requires_grad_(True)
    total = feature_reconstruction_loss([r2, r2], [t2, t2])
    assert math.isclose(float(total.detach()), 2 * float(feature_reconstruction_loss([r], [t])), rel_tol=1e-6)
    total.backward()
    assert r2.grad is not None and r2.grad.abs().sum() > 0 and t2.grad is None


def test_contrastive_term_is_2T_times_cross_entropy_with_own_key_positive():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    T = 0.2
    kn = [[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]
    qn = [[1.0, 0.0], [0.0, 1.0]]
    logits = [[sum(a * b for a, b in zip(qi, kj, strict=False)) / T for kj in kn] for qi in qn]
    ce = [-(logits[i][i] - math.log(sum(math.exp(v) for v in logits[i]))) for i in range(2)]
    want = 2 * T * (ce[0] + ce[1]) / 2
    assert math.isclose(float(masked_pair_contrastive_loss(q, k, T)), want, rel_tol=1e-6)
    # scaling q or k changes nothing (unit vectors); the key gets no gradient
    kk = k.clone().requires_grad_(True)
    qq = (3 * q).requires_grad_(True)
    loss = masked_pair_contrastive_loss(qq, kk, T)
    assert math.isclose(float(loss.detach()), want, rel_tol=1e-6)
    loss.backward()
    assert kk.grad is None and qq.grad is not None


def test_unpatchify_inverts_row_major_patches():
    img = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)  # 2x3 grid of 2 px patches
    patches = img.view(2, 3, 2, 2, 3, 2).permute(0, 2, 4, 3, 5, 1).reshape(2, 6, 12)  # (B, gh*gw, p*p*3)
    torch.testing.assert_close(unpatchify(patches, (2, 3), 2), img)
    assert torch.equal(patches[0, 1, :3], img[0, :, 0, 2])  # patch 1 = row 0, col 1; its first pixel's RGB


def test_decoder_puts_visible_tokens_back_in_place_and_mask_tokens_elsewhere():
    torch.manual_seed(0)
    dec = MAEDecoder(8, (2, 2), 2, width=8, depth=0, heads=2).eval()  # no blocks: position-wise only
    latent = torch.randn(1, 1 + 2, 8)  # CLS + visible patches 1 and 3
    keep = torch.tensor([[1, 3]])
    out = dec(latent, keep)
    assert out.shape == (1, 4, 12)
    # with no blocks each output depends on its own token: masked positions 0 and 2 differ only by position
    h = dec.embed(latent[:, 1:]) + dec.pos_embed[:, 1:][:, [1, 3]]
    torch.testing.assert_close(out[:, [1, 3]], dec.pred(dec.norm(h)))
    m = dec.mask_token + dec.pos_embed[:, 1:][:, [0, 2]]
    torch.testing.assert_close(out[:, [0, 2]], dec.pred(dec.norm(m)))
