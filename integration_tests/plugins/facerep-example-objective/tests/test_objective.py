"""Tests of the example plugin, as its author would write them.

The loss is checked against values worked out by hand; the objective as a whole against the
``facerep.testing`` contract suite (the same checks core runs on every objective).
"""

from __future__ import annotations

import importlib.metadata as md
import math

import numpy as np
import pytest
import torch
from torch import nn

from facerep.config import structure, unstructure
from facerep.errors import ConfigError
from facerep.testing import ObjectiveContract
from facerep.types import Features, Sample
from facerep_example_objective.objective import VICReg, VICRegParams, VICRegViews, vicreg_terms

# ---------------------------------------------------------------------------------------------
# the loss, by hand
# ---------------------------------------------------------------------------------------------


def test_vicreg_terms_match_hand_computed_values():
    # z_a: both columns are (1, -1): mean 0, unbiased var (1 + 1) / (2 - 1) = 2, so std = sqrt(2.0001) > 1
    #      (no variance penalty); covariance matrix [[2, 2], [2, 2]] -> off-diagonal 2^2 + 2^2 = 8, / D = 4.
    # z_b: columns (0.5, -0.5) and (0, 0): var 0.5 and 0 -> std sqrt(0.5001) and sqrt(0.0001) = 0.01;
    #      hinge mean ((1 - sqrt(0.5001)) + (1 - 0.01)) / 2; covariance [[0.5, 0], [0, 0]] -> 0.
    # invariance: mean of squared differences (0.5^2, 1^2, 0.5^2, 1^2) = 2.5 / 4 = 0.625.
    z_a = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    z_b = torch.tensor([[0.5, 0.0], [-0.5, 0.0]], dtype=torch.float64)
    t = vicreg_terms(z_a, z_b, gamma=1.0, eps=1e-4)
    hinge_b = ((1 - math.sqrt(0.5001)) + (1 - 0.01)) / 2
    assert t["invariance"].item() == pytest.approx(0.625, abs=1e-12)
    assert t["variance"].item() == pytest.approx((0.0 + hinge_b) / 2, abs=1e-12)  # both branches averaged
    assert t["variance"].item() == pytest.approx(0.3207058, abs=1e-6)
    assert t["covariance"].item() == pytest.approx(4.0 + 0.0, abs=1e-12)  # both branches summed


def test_weighted_loss_of_the_objective_is_the_paper_combination():
    torch.manual_seed(0)
    params = VICRegParams(expander_dims=(8, 6), sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    obj = VICReg(params, backbone=_LinearBackbone())
    views = [torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)]
    out = obj(views)
    logs = out.logs
    expected = 25 * logs["invariance"] + 25 * logs["variance"] + 1 * logs["covariance"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # the coefficients matter: switch the covariance term off and the loss drops by exactly it
    obj_nocov = VICReg(VICRegParams(expander_dims=(8, 6), cov_coeff=0.0), backbone=_LinearBackbone())
    obj_nocov.load_state_dict(obj.state_dict())
    again = obj_nocov(views)
    assert again.loss.item() == pytest.approx(expected - logs["covariance"], rel=1e-5)


def test_invariance_is_zero_for_identical_views_and_grows_with_their_distance():
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    assert vicreg_terms(z, z.clone())["invariance"].item() == 0.0
    near = vicreg_terms(z, z + 0.1)["invariance"].item()
    far = vicreg_terms(z, z + 1.0)["invariance"].item()
    assert near == pytest.approx(0.01) and far == pytest.approx(1.0)


def test_collapsed_embeddings_pay_the_full_variance_hinge():
    collapsed = torch.ones(8, 3)  # every sample the same: std = sqrt(eps) in every dimension
    t = vicreg_terms(collapsed, collapsed, gamma=1.0, eps=1e-4)
    assert t["variance"].item() == pytest.approx(1.0 - 0.01, abs=1e-6)
    assert t["covariance"].item() == 0.0
    spread = vicreg_terms(3 * torch.randn(256, 3), 3 * torch.randn(256, 3))
    assert spread["variance"].item() == 0.0  # std ~3 > gamma everywhere


def test_covariance_penalises_correlated_dimensions_only():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(512, 1)))
    b = torch.from_numpy(rng.normal(size=(512, 1)))
    correlated = torch.cat([a, a], 1)  # cov [[v, v], [v, v]] with v ~ 1 -> 2 v^2 / 2 ~ 1 per branch
    independent = torch.cat([a, b], 1)
    tc = vicreg_terms(correlated, correlated)["covariance"].item()
    ti = vicreg_terms(independent, independent)["covariance"].item()
    v = a.var().item()
    assert tc == pytest.approx(2 * (2 * v * v) / 2, rel=1e-9)
    assert ti < 0.02


def test_terms_reject_mismatched_or_single_sample_batches():
    with pytest.raises(ValueError, match="same shape"):
        vicreg_terms(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        vicreg_terms(torch.zeros(1, 3), torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------
# the objective on a stub backbone: cheap checks of wiring and learning
# ---------------------------------------------------------------------------------------------


class _LinearBackbone(nn.Module):
    """A stand-in backbone: global average pool then a linear layer (embed_dim 6)."""

    embed_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, self.embed_dim)

    @property
    def layer_dims(self) -> list[int]:
        return []

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0

    def forward(self, x: torch.Tensor) -> Features:
        return Features(pooled=self.fc(x.mean((2, 3))))


def test_training_the_objective_lowers_the_loss_and_reaches_the_backbone():
    torch.manual_seed(0)
    obj = VICReg(VICRegParams(expander_dims=(16, 8)), backbone=_LinearBackbone())
    x = torch.randn(32, 3, 4, 4)
    views = [x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)]
    opt = torch.optim.Adam(obj.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        out = obj(views)
        opt.zero_grad()
        out.loss.backward()
        assert obj.backbone.fc.weight.grad is not None and obj.backbone.fc.weight.grad.abs().sum() > 0
        opt.step()
        first = out.loss.item() if first is None else first
    assert out.loss.item() < 0.5 * first
    assert obj.exported_backbone() is obj.backbone


def test_forward_requires_two_views():
    obj = VICReg(VICRegParams.tiny(), backbone=_LinearBackbone())
    with pytest.raises(ValueError, match="2 views"):
        obj([torch.zeros(4, 3, 4, 4)])


# ---------------------------------------------------------------------------------------------
# views and params
# ---------------------------------------------------------------------------------------------


def _face(seed: int = 0, size: int = 40) -> Sample:
    return Sample(image=np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8))


def test_views_are_seeded_sized_uint8_and_differ_from_each_other():
    views = VICRegViews(VICRegParams(view_size=24))
    a = views(_face(), np.random.default_rng(7))
    b = views(_face(), np.random.default_rng(7))
    assert len(a) == 2
    for v in a:
        assert v.shape == (24, 24, 3) and v.dtype == np.uint8 and v.flags.c_contiguous
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])


def test_views_without_augmentation_are_the_resized_image():
    img = np.full((20, 20, 3), 100, np.uint8)
    img[:, :10] = 200  # left half bright
    p = VICRegParams(view_size=10, crop_scale=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0)
    v0, _ = VICRegViews(p)(Sample(image=img), np.random.default_rng(0))
    # full-area crop with aspect ratio in [3/4, 4/3] is clipped to the image, then resized
    assert v0[:, :4].min() >= 150 and v0[:, -4:].max() <= 150
    flipped, _ = VICRegViews(VICRegParams(view_size=10, crop_scale=(1.0, 1.0), flip_prob=1.0, jitter_prob=0.0,
                                          grayscale_prob=0.0))(Sample(image=img), np.random.default_rng(0))
    assert np.array_equal(flipped, v0[:, ::-1])
    grey, _ = VICRegViews(VICRegParams(view_size=10, jitter_prob=0.0, grayscale_prob=1.0))(_face(1), np.random.default_rng(0))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def test_params_round_trip_and_are_validated_with_the_field_path():
    p = VICRegParams.tiny()
    assert structure(unstructure(p), VICRegParams) == p
    assert structure({"expander_dims": [64, 32], "sim_coeff": 10}, VICRegParams).expander_dims == (64, 32)
    with pytest.raises(ConfigError, match=r"objective\.params\.expandr_dims: unknown key"):
        structure({"expandr_dims": [8]}, VICRegParams, path="objective.params")
    with pytest.raises(ConfigError, match=r"flip_prob must be in \[0, 1\], got 1\.5"):
        structure({"flip_prob": 1.5}, VICRegParams, path="objective.params")
    with pytest.raises(ConfigError, match=r"crop_scale must satisfy"):
        structure({"crop_scale": [0.9, 0.5]}, VICRegParams, path="objective.params")


# ---------------------------------------------------------------------------------------------
# the package as installed: entry point, registration, preset, contract suite
# ---------------------------------------------------------------------------------------------


def test_entry_point_registers_the_objective_under_the_plugin_namespace():
    from facerep.plugins import load_plugins

    (ep,) = md.entry_points(group="facerep", name="example")
    assert ep.value == "facerep_example_objective.plugin" and ep.dist.name == "facerep-example-objective"
    plugins = load_plugins(entry_points=[ep], strict=True)
    spec = plugins.get("objective", "vicreg")
    assert (spec.name, spec.dist, spec.version) == ("example.vicreg", "facerep-example-objective", "0.1.0")
    assert spec.load() is VICReg and spec.load_params() is VICRegParams
    (folder,) = [f for impl in plugins.manager.hook.facerep_config_paths.get_hookimpls() if impl.plugin_name == "example"
                 for f in impl.function()]
    assert (folder / "vicreg_synthetic.yaml").is_file()


def test_preset_config_is_valid_and_names_the_objective():
    from facerep.config import load_config
    from facerep_example_objective.plugin import facerep_config_paths

    cfg, _ = load_config(facerep_config_paths()[0] / "vicreg_synthetic.yaml")
    assert cfg.objective.name == "example.vicreg" and cfg.required_plugins == ("facerep-example-objective",)
    structure(cfg.objective.params, VICRegParams, path="objective.params")  # its params are valid


class TestVICRegContract(ObjectiveContract):
    """facerep's objective contract (views, forward/backward, state dict, params round trip)."""

    component = "example.vicreg"

    @pytest.fixture(autouse=True)
    def _installed_plugins(self, facerep_plugins):
        return facerep_plugins
