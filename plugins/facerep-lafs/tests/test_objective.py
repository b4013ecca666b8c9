"""The LAFS objective on its landmark ViT: the contract suite, the loss on the objective's own
outputs, the teacher-temperature schedule (0.07 -> 0.04), the EMA teacher (exported, always in eval
mode) and the landmark ViT's position embeddings by sequence index."""

from __future__ import annotations

import pytest
import torch

from facerep.errors import ConfigError
from facerep.prototypes import prototype_distillation_loss, teacher_distribution
from facerep.testing import ObjectiveContract, build_objective, call_objective, objective_batch
from facerep_lafs.lafs import LAFSParams


class TestLAFSContract(ObjectiveContract):
    component = "lafs.lafs"
    image_size = 40

    @pytest.fixture(autouse=True)
    def _plugins(self, lafs_plugins):
        yield


@pytest.fixture
def lafs(lafs_plugins):
    return build_objective("lafs.lafs")


def test_views_carry_all_landmarks_for_globals_and_subsets_for_locals(lafs, tiny_faces):
    views, extras = objective_batch(lafs, tiny_faces)
    p = LAFSParams.tiny()
    assert len(views) == 2 + p.local_crops and all(v.shape[-2:] == (32, 32) for v in views)
    assert extras["global_points"].shape == (4, 2, 68, 2) and extras["local_points"].shape == (4, p.local_crops, p.local_landmarks, 2)
    colours = lafs.view_transform().colours
    assert all(c.flip_p == 0.0 for c in colours), "flips are geometric (points re-ordered), never in the colour chain"
    assert lafs.view_transform().flip_order is not None and lafs.view_transform().sigma == 5.0


def test_loss_is_dinos_cross_entropy_over_landmark_views(lafs, tiny_faces):
    views, extras = objective_batch(lafs, tiny_faces)
    lafs.eval()
    out = call_objective(lafs, (views, extras))
    gp, lp = extras["global_points"], extras["local_points"]
    with torch.no_grad():
        s = [lafs.head(lafs.backbone.forward_points(views[v], gp[:, v]).pooled) for v in range(2)]
        s += [lafs.head(lafs.backbone.forward_points(views[2 + v], lp[:, v]).pooled) for v in range(lp.shape[1])]
        t = [lafs.teacher_head(lafs.teacher_backbone.forward_points(views[v], gp[:, v]).pooled) for v in range(2)]
        probs = [teacher_distribution(x, lafs.centre.centre, 0.07) for x in t]
        want = prototype_distillation_loss(s, probs, 0.1)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.logs["teacher_temperature"] == pytest.approx(0.07)


def test_teacher_temperature_goes_down_as_the_official_code_and_the_teacher_follows_by_ema(lafs, tiny_faces):
    lafs.after_optimizer_step(1, 10)  # 2 of 4 warm-up steps
    assert lafs.teacher_temperature() == pytest.approx(0.07 - 0.03 * 2 / 4)
    with torch.no_grad():
        for q in lafs.backbone.parameters():
            q.add_(0.1)
    before = {n: q.clone() for n, q in lafs.teacher_backbone.named_parameters()}
    lafs.after_optimizer_step(5, 10)
    from facerep.engine.ema import cosine_momentum

    m = cosine_momentum(5, 10, 0.996)
    student = dict(lafs.backbone.named_parameters())
    for n, q in lafs.teacher_backbone.named_parameters():
        torch.testing.assert_close(q, m * before[n] + (1 - m) * student[n])
    assert lafs.teacher_temperature() == pytest.approx(0.04)
    assert lafs.exported_backbone() is lafs.teacher_backbone
    lafs.train()
    assert not lafs.teacher_backbone.training and lafs.backbone.training


def test_local_tokens_take_the_first_position_embeddings(lafs):
    vit = lafs.backbone
    x = torch.randn(1, 3, 32, 32)
    pts = torch.rand(1, 5, 2) * 31
    with torch.no_grad():
        vit.pos_embed[:, 6:] = 1e3  # positions beyond a 5-token view must not be read
        a = vit.forward_points(x, pts).pooled
        vit.pos_embed[:, 6:] = -1e3
        b = vit.forward_points(x, pts).pooled
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="position embeddings for 68"):
        vit.forward_points(x, torch.zeros(1, 69, 2))


def test_a_backbone_without_landmark_tokens_is_refused(lafs_plugins):
    with pytest.raises(ConfigError, match=r"lafs\.landmark_vit"):
        build_objective("lafs.lafs", backbone={"model": "resnet10t"})


def test_fine_tuning_decays_the_lr_layer_by_layer_as_lafs(lafs):
    from facerep.eval.protocols import backbone_param_groups

    groups = backbone_param_groups(lafs.backbone, 1e-3, 0.1, 0.58)
    lr_of = {}
    names = {id(q): n for n, q in lafs.backbone.named_parameters()}
    for g in groups:
        for q in g["params"]:
            lr_of[names[id(q)]] = (g["lr"], g["weight_decay"])
    depth = len(lafs.backbone.blocks)
    # timm's convention (core.finetune, every ViT): the embedding at decay^depth, block i at
    # decay^(depth - 1 - i), the final norm with the last block at 1 (LAFS: the last block at 0.58)
    assert lr_of["pos_embed"] == (pytest.approx(1e-3 * 0.58**depth), 0.0)
    assert lr_of["patch_embed.weight"] == (pytest.approx(1e-3 * 0.58**depth), 0.1)
    assert lr_of["blocks.0.attn.qkv.weight"] == (pytest.approx(1e-3 * 0.58 ** (depth - 1)), 0.1)
    assert lr_of["blocks.1.mlp.fc1.weight"] == (pytest.approx(1e-3), 0.1)
    assert lr_of["norm.weight"] == (pytest.approx(1e-3), 0.0)
