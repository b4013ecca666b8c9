"""The MCF objective: the contract suite (with its extras path), the total and its scalings, which
positions are masked, the momentum encoder, the explicit teacher and its manifest."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from facerep.config import structure
from facerep.errors import ConfigError
from facerep.testing import ObjectiveContract, build_objective, call_objective, objective_batch
from facerep_mcf.mcf import MCFParams
from facerep_mcf.teacher import TeacherParams

pytestmark = pytest.mark.filterwarnings("ignore:MCF teacher .* has random weights")


class TestMCFContract(ObjectiveContract):
    component = "mcf.mcf"

    @pytest.fixture(autouse=True)
    def _plugins(self, mcf_plugins):
        yield


@pytest.fixture
def mcf(mcf_plugins):
    return build_objective("mcf.mcf")


def test_views_are_one_image_and_two_independent_masks_of_the_configured_ratio(mcf, tiny_faces):
    views, extras = objective_batch(mcf, tiny_faces, n=8)
    assert len(views) == 1 and views[0].shape == (8, 3, 32, 32)
    mask = extras["mask"]
    assert mask.shape == (8, 2, 16) and mask.dtype == torch.bool
    assert (mask.sum(-1) == 12).all(), "75 % of the 16 patches hidden from each encoder"
    assert not torch.equal(mask[:, 0], mask[:, 1]), "online and momentum masks are drawn independently"


def test_the_loss_is_1000_times_the_feature_term_plus_the_contrastive_term(mcf_plugins, tiny_faces):
    for weight in (1000.0, 3.0):
        obj = build_objective("mcf.mcf", {"feature_weight": weight})
        obj.eval()
        with torch.no_grad():
            out = call_objective(obj, objective_batch(obj, tiny_faces))
        assert math.isclose(float(out.loss), weight * out.logs["loss_feature"] + out.logs["loss_contrast"], rel_tol=1e-5)
        assert out.logs["loss_feature"] > 0 and out.logs["loss_contrast"] > 0


def test_masked_pixels_of_the_online_view_do_not_reach_the_online_encoder(mcf, tiny_faces):
    """Only the teacher's target (the whole image) and the momentum branch (its own mask) see them."""
    views, extras = objective_batch(mcf, tiny_faces)
    mask = extras["mask"]
    both_hidden = int(torch.nonzero(mask[0, 0] & mask[0, 1])[0])
    row, col = divmod(both_hidden, 4)
    mcf.eval()
    from facerep.backbones.masking import keep_indices, vit_tokens

    x2 = views[0].clone()
    x2[0, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 3.0
    with torch.no_grad():
        keep = keep_indices(mask[:, 0])
        torch.testing.assert_close(vit_tokens(mcf.backbone, x2, keep=keep), vit_tokens(mcf.backbone, views[0], keep=keep))


def test_momentum_encoder_follows_with_m_0_99_and_only_the_student_is_exported(mcf, tiny_faces):
    assert mcf.params.momentum == 0.99
    before = [p.detach().clone() for p in mcf.target_backbone.parameters()]
    online = [p for p in mcf.backbone.parameters()]
    with torch.no_grad():
        for p in online:
            if p.requires_grad:
                p.add_(0.5)
    mcf.after_optimizer_step(0, 10)
    for t, b, o in zip(mcf.target_backbone.parameters(), before, online, strict=True):
        torch.testing.assert_close(t, 0.99 * b + 0.01 * o)
    assert mcf.exported_backbone() is mcf.backbone
    assert not any(p.requires_grad for p in mcf.target_backbone.parameters())


def test_encoder_position_embeddings_are_fixed_sincos(mcf):
    pos = mcf.backbone.model.pos_embed
    assert not pos.requires_grad and torch.all(pos[0, 0] == 0)
    assert torch.allclose(pos[0, 1:].abs().max(), torch.tensor(1.0)), "sin/cos values"


def test_teacher_is_frozen_out_of_the_state_dict_and_moves_with_the_objective(mcf):
    assert not any(k.startswith("teacher") for k in mcf.state_dict())
    assert all(not p.requires_grad for p in mcf.teacher.parameters())
    assert not any(p is q for p in mcf.parameters() for q in mcf.teacher.parameters())
    mcf.train()
    assert not mcf.teacher.training and not mcf.teacher.backbone.model.bn1.training, "the teacher's BN statistics never move"
    mcf.to(torch.float64)
    assert next(mcf.teacher.parameters()).dtype == torch.float64
    assert mcf.manifest()["teacher"]["model"] == "resnet10t" and mcf.manifest()["teacher"]["layers"] == [1, 2]


def test_a_teacher_exported_by_another_facerep_run_is_loaded_with_its_hash(mcf_plugins, tmp_path):
    import hashlib

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.checkpoint import export_backbone
    from facerep.config import ComponentConfig

    torch.manual_seed(3)
    bb = TimmBackbone(TimmBackboneParams(model="resnet10t"))
    path = export_backbone(bb, tmp_path / "backbone.safetensors", backbone=ComponentConfig("core.timm", {"model": "resnet10t"}),
                           method="frl.moco_v2")
    obj = build_objective("mcf.mcf", {"teacher": TeacherParams(weights=str(path), layers=(1, 3))})
    torch.testing.assert_close(obj.teacher.backbone.model.conv1[0].weight, bb.model.conv1[0].weight)
    src = obj.manifest()["teacher"]
    assert src["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and src["backbone"]["name"] == "core.timm"
    feats = obj.teacher(torch.full((2, 3, 32, 32), 128.0))
    assert [f.shape[-1] for f in feats] == [64, 256], "timm feature indices 1 and 3 (layer1, layer3; 0 is the stem), as tokens"
    assert [f.shape[1] for f in feats] == [8 * 8, 2 * 2]


def test_the_teacher_must_be_named(mcf_plugins):
    from facerep.config import FieldError

    with pytest.raises(Exception, match="teacher"):
        structure({"mask_ratio": 0.75}, MCFParams, path="objective.params")
    with pytest.raises(FieldError, match="exactly one"):
        TeacherParams()
    with pytest.raises(FieldError, match="exactly one"):
        TeacherParams(weights="a.safetensors", model="vit_base_patch16_224")


def test_a_cnn_backbone_is_refused(mcf_plugins):
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep_mcf.mcf import MCFObjective

    with pytest.raises(ConfigError, match="needs a timm ViT"):
        MCFObjective(MCFParams.tiny(), backbone=TimmBackbone(TimmBackboneParams(model="resnet10t")))


def test_params_round_trip_through_yaml_shaped_dicts():
    from facerep.config import unstructure

    p = MCFParams.tiny()
    assert structure(unstructure(p), MCFParams) == p
    assert np.isclose(p.temperature, 0.2) and p.feature_weight == 1000.0


def test_resume_refuses_a_teacher_file_replaced_between_sessions(mcf_plugins, tmp_path, capsys):
    """`facerep run --stop-after` then `--resume` with the same config but another file at the
    teacher's path: the manifest's SHA-256 differs and the run is refused, its checkpoint untouched."""
    import yaml

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.checkpoint import export_backbone
    from facerep.cli import main
    from facerep.config import ComponentConfig, unstructure

    def teacher(seed: int) -> None:
        torch.manual_seed(seed)
        export_backbone(TimmBackbone(TimmBackboneParams(model="resnet10t")), tmp_path / "teacher.safetensors",
                        backbone=ComponentConfig("core.timm", {"model": "resnet10t"}), method="frl.moco_v2")

    teacher(0)
    params = {**unstructure(MCFParams.tiny()), "teacher": {"weights": str(tmp_path / "teacher.safetensors"), "layers": [1, 2]}}
    cfg = tmp_path / "mcf.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "mcf_resume", "seed": 0, "data": {"name": "core.synthetic", "params": {"n": 32, "size": 64}},
        "backbone": {"name": "core.timm", "params": MCFParams.tiny_backbone()},
        "objective": {"name": "mcf.mcf", "params": params},
        "train": {"max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "precision": "fp32"}}))
    wd = tmp_path / "wd"
    assert main(["run", str(cfg), "--work-dir", str(wd), "--stop-after", "2"]) == 0
    assert json.loads((wd / "objective.json").read_text())["teacher"]["weights"].endswith("teacher.safetensors")
    teacher(1)
    capsys.readouterr()
    ckpt = (wd / "iter_2.pth").read_bytes()
    assert main(["run", str(cfg), "--work-dir", str(wd), "--resume"]) != 0
    err = capsys.readouterr().err
    assert "manifest differs" in err and "teacher.sha256" in err, err
    assert (wd / "iter_2.pth").read_bytes() == ckpt and not (wd / "backbone.safetensors").exists()
    teacher(0)  # the original file back: the run finishes
    assert main(["run", str(cfg), "--work-dir", str(wd), "--resume"]) == 0
    assert (wd / "backbone.safetensors").is_file()


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_official_initialisation_is_mcfs_and_timm_keeps_the_old_one(mcf_plugins):
    """models_mcf.py:65-90,235-256: every Linear xavier-uniform with zero bias, the patch embedding
    xavier on its flattened weight (bias: Conv2d's default), cls_token N(0, 0.02), LayerNorm 1 / 0;
    the target starts as a copy of the online encoder and projector."""
    from torch import nn

    torch.manual_seed(0)
    obj = build_objective("mcf.mcf")
    assert obj.params.init == "official"
    linears = [m for part in (obj.backbone, obj.decoder, obj.projector, obj.predictor) for m in part.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 4 + 4 + 2 + 2 + 2  # encoder blocks, decoder block, embed / pred, projector, predictor
    for m in linears:
        bound = math.sqrt(6.0 / (m.in_features + m.out_features))
        assert float(m.weight.abs().max()) <= bound and float(m.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.2)
        assert m.bias is None or not m.bias.any()
    proj = obj.backbone.model.patch_embed.proj
    fan_in = proj.weight[0].numel()
    bound = math.sqrt(6.0 / (fan_in + proj.weight.shape[0]))
    assert float(proj.weight.abs().max()) <= bound and float(proj.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.2)
    assert 0 < float(proj.bias.abs().max()) <= 1 / math.sqrt(fan_in)
    assert float(obj.backbone.model.cls_token.std()) == pytest.approx(0.02, rel=0.25)
    for m in obj.modules():
        if isinstance(m, nn.LayerNorm):
            assert bool((m.weight == 1).all()) and not m.bias.any()
    for t, o in zip([*obj.target_backbone.parameters(), *obj.target_projector.parameters()],
                    [*obj.backbone.parameters(), *obj.projector.parameters()], strict=True):
        assert torch.equal(t, o)
    assert obj.decoder.norm.eps == 1e-6, "MCF's norm_layer partial (models_mcf.py:154,381)"

    torch.manual_seed(0)
    old = build_objective("mcf.mcf", {"init": "timm"})
    assert float(old.backbone.model.cls_token.std()) < 1e-5, "timm's ViT init (cls_token 1e-6)"
