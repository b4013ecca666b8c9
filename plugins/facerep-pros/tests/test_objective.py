"""The ProS objective: the contract suite, multi-crop views, the loss on the objective's own
outputs, the EMA teacher (exported, never in training mode), the teacher-temperature warm-up, the
prototype freeze and the params' checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerep.config import structure
from facerep.engine.ema import cosine_momentum
from facerep.errors import ConfigError
from facerep.prototypes import prototype_distillation_loss, teacher_distribution
from facerep.testing import ObjectiveContract, build_objective, call_objective, objective_batch
from facerep_pros.pros import ProSParams


class TestProSContract(ObjectiveContract):
    component = "pros.pros"

    @pytest.fixture(autouse=True)
    def _plugins(self, pros_plugins):
        yield


@pytest.fixture
def pros(pros_plugins):
    return build_objective("pros.pros")


def test_views_are_two_globals_then_the_locals_with_dinos_asymmetric_blur_and_solarisation(pros, tiny_faces):
    views = pros.view_transform()(tiny_faces[0], np.random.default_rng(0))
    p = ProSParams.tiny()
    assert [v.shape for v in views] == [(32, 32, 3)] * 2 + [(16, 16, 3)] * p.local_crops
    first, second, local = pros.view_transform().colours
    assert (first.blur_p, second.blur_p, local.blur_p) == (1.0, 0.1, 0.5)
    assert (first.solarize_p, second.solarize_p, local.solarize_p) == (0.0, 0.2, 0.0)
    assert {(c.brightness, c.contrast, c.saturation, c.hue, c.jitter_p, c.grayscale_p) for c in (first, second, local)} == \
        {(0.4, 0.4, 0.2, 0.1, 0.8, 0.2)}


def test_loss_is_the_prototype_matching_cross_entropy_of_the_students_views_against_the_teachers_globals(pros, tiny_faces):
    views, extras = objective_batch(pros, tiny_faces)
    pros.eval()  # no centre staging: the same forward twice
    out = call_objective(pros, (views, extras))
    b = views[0].shape[0]
    with torch.no_grad():
        s = [pros.head(pros.backbone(v).pooled) for v in views]
        t = [pros.teacher_head(pros.teacher_backbone(v).pooled) for v in views[:2]]
        probs = [teacher_distribution(x, pros.centre.centre, pros.teacher_temperature()) for x in t]
        want = prototype_distillation_loss(s, probs, 0.1)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert len(s) == 2 + ProSParams.tiny().local_crops and s[0].shape == (b, 32)
    assert out.logs["teacher_temperature"] == pytest.approx(0.04)


def test_teacher_follows_the_student_by_cosine_ema_and_the_centre_by_its_momentum(pros, tiny_faces):
    with torch.no_grad():
        for p in pros.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    before = {n: p.clone() for n, p in pros.teacher_backbone.named_parameters()}
    pros.train()
    batch = objective_batch(pros, tiny_faces)
    call_objective(pros, batch)
    with torch.no_grad():
        t = torch.cat([pros.teacher_head(pros.teacher_backbone(v).pooled) for v in batch[0][:2]])
    pros.after_optimizer_step(3, 10)
    m = cosine_momentum(3, 10, 0.996)
    assert 0.996 < m < 1
    student = dict(pros.backbone.named_parameters())
    for n, p in pros.teacher_backbone.named_parameters():
        torch.testing.assert_close(p, m * before[n] + (1 - m) * student[n])
    torch.testing.assert_close(pros.centre.centre, 0.1 * t.float().mean(0, keepdim=True), rtol=1e-4, atol=1e-6)
    assert int(pros.step) == 4


def test_teacher_temperature_warms_up_in_steps_and_survives_a_state_dict_round_trip(pros):
    p = ProSParams.tiny()  # 0.04 -> 0.07 over 4 steps
    assert pros.teacher_temperature() == pytest.approx(p.warmup_teacher_temperature)
    pros.after_optimizer_step(1, 10)  # two steps done
    assert pros.teacher_temperature() == pytest.approx(0.04 + 0.03 * 2 / 4)
    again = build_objective("pros.pros", seed=1)
    again.load_state_dict(pros.state_dict())
    assert again.teacher_temperature() == pytest.approx(0.055)
    pros.after_optimizer_step(7, 10)
    assert pros.teacher_temperature() == pytest.approx(0.07)


def test_prototypes_stay_frozen_for_the_first_steps_only(pros, tiny_faces):
    pros.train()
    for step, frozen in [(0, True), (1, False)]:  # tiny: freeze_prototypes_steps = 1
        pros.zero_grad(set_to_none=True)
        call_objective(pros, objective_batch(pros, tiny_faces)).loss.backward()
        pros.before_optimizer_step(step)
        assert (pros.head.prototypes.grad is None) == frozen
        assert pros.head.mlp[0].weight.grad is not None


def test_the_teacher_is_exported_and_never_trains_in_training_mode(pros):
    assert pros.exported_backbone() is pros.teacher_backbone
    pros.train()
    assert pros.backbone.training and not pros.teacher_backbone.training
    assert not any(p.requires_grad for p in pros.teacher_backbone.parameters())
    assert not any(p.requires_grad for p in pros.teacher_head.parameters())


def test_local_crops_of_another_size_need_a_vit_that_takes_any_size(pros_plugins):
    fixed = {"model": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "model_kwargs": {"depth": 1}}
    with pytest.raises(ConfigError, match="dynamic_img_size"):
        build_objective("pros.pros", backbone=fixed)
    build_objective("pros.pros", {"local_crops": 0}, backbone=fixed)  # globals only: any ViT


def test_params_name_the_bad_field():
    with pytest.raises(ConfigError, match=r"objective\.params\.centre_momentum"):
        structure({"centre_momentum": 1.0}, ProSParams, path="objective.params")
    p = structure({"global_scale": [0.4, 1.0], "blur_p": [1, 0.1, 0.5]}, ProSParams)
    assert p.global_scale == (0.4, 1.0) and p.n_prototypes == 65536
