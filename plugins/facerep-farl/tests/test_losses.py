"""FaRL's loss terms and patch tokenizer against values computed by hand."""

from __future__ import annotations

import math

import torch

from facerep_farl.losses import image_text_contrastive_loss, masked_token_loss
from facerep_farl.patch_tokenizer import KMeansPatchTokenizer, kmeans


def _ce(row: list[float], target: int) -> float:
    return -(row[target] - math.log(sum(math.exp(v) for v in row)))


def test_itc_is_the_symmetric_cross_entropy_of_scaled_cosines():
    u = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    w = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    s = 10.0
    un = [[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]
    wn = [[0.0, 1.0], [1.0, 0.0]]
    sim = [[s * sum(a * b for a, b in zip(ui, wj, strict=False)) for wj in wn] for ui in un]
    i2t = (_ce(sim[0], 0) + _ce(sim[1], 1)) / 2
    t2i = (_ce([sim[0][0], sim[1][0]], 0) + _ce([sim[0][1], sim[1][1]], 1)) / 2
    got = image_text_contrastive_loss(u, w, torch.tensor(s))
    assert math.isclose(float(got), 0.5 * (i2t + t2i), rel_tol=1e-6)


def test_itc_gradient_reaches_the_logit_scale():
    t = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = image_text_contrastive_loss(torch.randn(4, 3), torch.randn(4, 3), t.exp())
    loss.backward()
    assert t.grad is not None and t.grad != 0


def test_mim_loss_scores_only_masked_positions():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 5.0  # position 0 (masked): confident in id 2
    logits[0, 1, 1] = 9.0  # position 1 (visible): anything, never scored
    targets = torch.tensor([[2, 0, 3]])
    mask = torch.tensor([[True, False, True]])
    want = (_ce([0, 0, 5, 0], 2) + _ce([0, 0, 0, 0], 3)) / 2
    assert math.isclose(float(masked_token_loss(logits, targets, mask)), want, rel_tol=1e-6)


def test_kmeans_finds_well_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    found = kmeans(pts, 3, seed=1)
    dist = torch.cdist(centres, found)
    assert (dist.min(1).values < 0.1).all() and len(set(dist.argmin(1).tolist())) == 3


def test_patch_tokenizer_ids_follow_the_vit_patch_order_and_fit_once():
    tok = KMeansPatchTokenizer(patch=4, vocab_size=2, pool=1)
    img = torch.zeros(2, 3, 8, 8)
    img[:, :, :4, 4:] = 255.0  # patch 1 (row 0, col 1) is white, the rest black
    img[1, :, 4:, :4] = 255.0  # and patch 2 of the second image
    ids = tok(img)
    assert bool(tok.fitted) and ids.shape == (2, 4)
    white = ids[0, 1]
    assert ids[0].tolist() == [1 - white, white, 1 - white, 1 - white]
    assert ids[1].tolist() == [1 - white, white, white, 1 - white]
    before = tok.centroids.clone()
    tok(torch.full((1, 3, 8, 8), 128.0))  # fitted: a new batch does not refit
    assert torch.equal(tok.centroids, before)


def test_a_saved_codebook_loads_and_a_wrong_one_is_refused(tmp_path):
    import pytest

    from facerep.errors import DataError

    tok = KMeansPatchTokenizer(patch=4, vocab_size=2, pool=1)
    tok(torch.rand(2, 3, 8, 8) * 255)
    tok.save(tmp_path / "c.safetensors")
    again = KMeansPatchTokenizer(patch=4, vocab_size=2, pool=1, codebook=str(tmp_path / "c.safetensors"))
    assert bool(again.fitted) and torch.equal(again.centroids, tok.centroids)
    with pytest.raises(DataError, match="expected"):
        KMeansPatchTokenizer(patch=4, vocab_size=3, pool=1, codebook=str(tmp_path / "c.safetensors"))


def test_a_users_vq_tokenizer_gives_the_nearest_code_of_its_encoders_patch_tokens(tmp_path, farl_plugins):
    from safetensors.torch import save_file

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.checkpoint import export_backbone
    from facerep.config import ComponentConfig
    from facerep.testing import build_objective
    from facerep_farl.patch_tokenizer import VQPatchTokenizer

    params = {"model": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "model_kwargs": {"depth": 1}}
    torch.manual_seed(0)
    enc = TimmBackbone(TimmBackboneParams(**params)).eval()
    path = export_backbone(enc, tmp_path / "vq.safetensors", backbone=ComponentConfig("core.timm", params), method="user.dvae")
    book = torch.randn(8, 192)
    save_file({"codebook": book}, str(tmp_path / "codes.safetensors"))
    tok = VQPatchTokenizer(weights=str(path), codebook=str(tmp_path / "codes.safetensors"), n_patches=16, vocab_size=8)
    imgs = torch.rand(2, 3, 32, 32) * 255
    ids = tok(imgs)
    with torch.no_grad():
        tokens = enc(enc.preprocess(imgs)).tokens
    assert ids.shape == (2, 16)
    assert torch.equal(ids[1, 5], ((tokens[1, 5] - book) ** 2).sum(1).argmin())
    obj = build_objective("farl.farl", {"tokenizer_weights": str(path), "codebook": str(tmp_path / "codes.safetensors")})
    assert isinstance(obj.patch_tokenizer, VQPatchTokenizer)
    import pytest

    from facerep.errors import DataError

    with pytest.raises(DataError, match="vocab_size is 9"):
        VQPatchTokenizer(weights=str(path), codebook=str(tmp_path / "codes.safetensors"), n_patches=16, vocab_size=9)


def test_roc_auc_is_the_probability_a_positive_outranks_a_negative():
    import numpy as np

    from facerep_farl.zero_shot import roc_auc

    score = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    label = np.array([0, 0, 1, 1, 1])
    # pairs (pos, neg): (0.35,0.1)=1 (0.35,0.4)=0 (0.8,*)=1,1 (0.4,0.1)=1 (0.4,0.4)=0.5 -> 4.5 / 6
    assert abs(roc_auc(score, label) - 4.5 / 6) < 1e-12
    assert roc_auc(score, np.ones(5)) != roc_auc(score, np.ones(5))  # NaN for one class
    assert roc_auc(-score, label) == 1 - roc_auc(score, label)
