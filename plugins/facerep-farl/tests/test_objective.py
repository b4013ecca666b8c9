"""The FaRL objective: the contract suite (captions and masks as view extras), the total, the
clean and masked copies sharing one encoder pass, the logit-scale clamp, weight decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from facerep.testing import ObjectiveContract, build_objective, call_objective, objective_batch


class TestFaRLContract(ObjectiveContract):
    component = "farl.farl"

    @pytest.fixture(autouse=True)
    def _plugins(self, farl_plugins):
        yield


@pytest.fixture
def farl(farl_plugins):
    return build_objective("farl.farl")


def test_the_loss_is_itc_plus_lambda_mim(farl_plugins, tiny_faces):
    faces = tiny_faces
    for weight in (1.0, 0.25):
        obj = build_objective("farl.farl", {"mim_weight": weight})
        obj.eval()
        with torch.no_grad():
            out = call_objective(obj, objective_batch(obj, faces))
        assert math.isclose(float(out.loss), out.logs["loss_itc"] + weight * out.logs["loss_mim"], rel_tol=1e-5)
        assert out.logs["loss_mim"] > 0 and math.isclose(out.logs["logit_scale"], 1 / 0.07, rel_tol=1e-5)


def test_image_text_only_skips_the_masked_copy(farl_plugins, tiny_faces):
    obj = build_objective("farl.farl", {"mim_weight": 0.0})
    obj.eval()
    batch = objective_batch(obj, tiny_faces)
    with torch.no_grad():
        out = call_objective(obj, batch)
    assert "loss_mim" not in out.logs and math.isclose(float(out.loss), out.logs["loss_itc"], rel_tol=1e-6)
    assert not bool(obj.patch_tokenizer.fitted), "no MIM: the codebook is never fitted"


def test_clean_copy_matches_the_plain_image_tower_and_masked_patches_are_hidden(farl, tiny_faces):
    from facerep.backbones.masking import vit_tokens

    faces = tiny_faces
    views, extras = objective_batch(farl, faces)
    farl.eval()
    x, mask = views[0], extras["mim_mask"]
    with torch.no_grad():
        both = vit_tokens(farl.backbone, torch.cat([x, x]), mask=torch.cat([torch.zeros_like(mask), mask]), mask_token=farl.mask_token)
        torch.testing.assert_close(both[: len(x)], vit_tokens(farl.backbone, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(farl.encode_image(x), farl.joint.image_proj(both[: len(x), 0]), rtol=1e-5, atol=1e-5)
        hidden = int(torch.nonzero(mask[0])[0])
        r, c = divmod(hidden, farl.grid[1])
        x2 = x.clone()
        x2[0, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 4.0
        again = vit_tokens(farl.backbone, x2[:1], mask=mask[:1], mask_token=farl.mask_token)
        torch.testing.assert_close(again, both[len(x) : len(x) + 1])


def test_logit_scale_is_clamped_at_100_after_a_step(farl):
    with torch.no_grad():
        farl.joint.logit_scale.fill_(math.log(500.0))
    assert math.isclose(float(farl.joint.scale().detach()), 100.0, rel_tol=1e-6), "capped in the loss"
    farl.after_optimizer_step(0, 10)
    assert math.isclose(float(farl.joint.logit_scale.detach().exp()), 100.0, rel_tol=1e-5), "clamped in place as CLIP"


def test_no_weight_decay_on_scale_gains_and_biases_outside_the_backbone(farl):
    (group,) = farl.param_groups()
    ids = {id(p) for p in group.params}
    assert group.weight_decay == 0.0 and id(farl.joint.logit_scale) in ids and id(farl.mask_token) in ids
    assert id(farl.mim_head.weight) not in ids and not any(id(p) in ids for p in farl.backbone.parameters())


def test_a_cnn_backbone_is_refused(farl_plugins):
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.errors import ConfigError
    from facerep_farl.farl import FaRLObjective, FaRLParams

    with pytest.raises(ConfigError, match="needs a timm ViT"):
        FaRLObjective(FaRLParams.tiny(), backbone=TimmBackbone(TimmBackboneParams(model="resnet10t")))


def test_the_mim_head_reads_the_stream_before_the_final_norm_as_farls_model(farl, tiny_faces):
    """FaRL model.py:387-389: the MIM transformer reads the last block's raw output; the final norm
    (ln_post) only feeds the ITC feature. MIM blocks are CLIP's (QuickGELU, LN eps 1e-5), the mask
    token starts at width^-0.5 * randn (model.py:320)."""
    from timm.layers import QuickGELU

    batch = objective_batch(farl, tiny_faces)
    farl.eval()
    with torch.no_grad():
        before = call_objective(farl, batch).logs
        farl.backbone.model.norm.weight.mul_(3.0)
        farl.backbone.model.norm.bias.add_(0.5)
        after = call_objective(farl, batch).logs
    assert after["loss_mim"] == pytest.approx(before["loss_mim"], rel=1e-6) and after["loss_itc"] != pytest.approx(before["loss_itc"])
    block = farl.mim_blocks[0]
    assert isinstance(block.mlp.act, QuickGELU) and block.norm1.eps == block.norm2.eps == farl.mim_norm.eps == 1e-5
    d = farl.mask_token.numel()
    assert 0.6 * d**-0.5 < float(farl.mask_token.detach().std()) < 1.4 * d**-0.5
