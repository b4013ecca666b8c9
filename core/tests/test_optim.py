"""Optimizers and per-iteration schedules built from TrainConfig."""

from __future__ import annotations

import math

import pytest
import torch
from mmengine.optim.scheduler import CosineAnnealingLR, CosineAnnealingParamScheduler, LinearLR

from facerep.config import LRSchedule, OptimizerConfig, TrainConfig
from facerep.engine.optim import build_optim_wrapper, build_schedulers, param_groups
from facerep.errors import ConfigError

_SCHEDULERS = {"LinearLR": LinearLR, "CosineAnnealingLR": CosineAnnealingLR, "CosineAnnealingParamScheduler": CosineAnnealingParamScheduler}


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))


def test_no_decay_group_holds_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay, skip = param_groups(model, 0.1, ("bias", "norm"))
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])] and decay["weight_decay"] == 0.1
    assert len(skip["params"]) == 3 and skip["weight_decay"] == 0.0
    assert len(param_groups(model, 0.1, ())) == 1  # LARS presets put every parameter under decay


def test_lars_and_lr_scaling():
    model = torch.nn.Linear(3, 2)
    cfg = TrainConfig(optimizer=OptimizerConfig(type="lars", lr=0.3, lr_reference_batch=256, no_decay=()))
    wrapper, lr = build_optim_wrapper(model, cfg, global_batch=512, device_type="cpu")
    from timm.optim import Lars

    assert isinstance(wrapper.optimizer, Lars) and lr == pytest.approx(0.6)
    assert wrapper.optimizer.defaults["trust_coeff"] == 0.001 and wrapper.optimizer.defaults["always_adapt"]


def test_warmup_cosine_lr_and_cosine_weight_decay_follow_their_formulas():
    model = _model()
    model(torch.zeros(1, 3, 5, 5))
    cfg = TrainConfig(max_steps=20, optimizer=OptimizerConfig(type="sgd", lr=1.0, weight_decay=0.04),
                      schedule=LRSchedule(warmup_steps=5, warmup_start_factor=0.1, final_factor=0.01, final_weight_decay=0.4))
    wrapper, lr = build_optim_wrapper(model, cfg, 1, "cpu")
    scheds = []
    for spec in build_schedulers(cfg, lr):
        spec = dict(spec)
        scheds.append(_SCHEDULERS[spec.pop("type")](wrapper, **spec))
    lrs, wds, nodecay = [], [], []
    for _ in range(20):
        lrs.append(wrapper.optimizer.param_groups[0]["lr"])
        wds.append(wrapper.optimizer.param_groups[0]["weight_decay"])
        nodecay.append(wrapper.optimizer.param_groups[1]["weight_decay"])
        for s in scheds:
            s.step()
    # mmengine's LinearLR reaches the peak on the last warm-up step (4 of 0..4)
    assert lrs[:5] == pytest.approx([0.1 + 0.9 * k / 4 for k in range(5)]) and lrs[5] == pytest.approx(1.0)
    t = 10 - 5  # cosine from step 5 to 20 towards 0.01
    assert lrs[10] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * t / 15)) / 2)
    assert wds[0] == pytest.approx(0.04) and wds[10] == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * 10 / 20)) / 2)
    assert set(nodecay) == {0.0}


def test_gradient_clipping_bounds_the_update_norm():
    model = torch.nn.Linear(4, 1, bias=False)
    cfg = TrainConfig(grad_clip=0.5, optimizer=OptimizerConfig(type="sgd", lr=1.0, momentum=0.0, weight_decay=0.0))
    wrapper, _ = build_optim_wrapper(model, cfg, 1, "cpu")
    before = model.weight.detach().clone()
    (1000.0 * model(torch.ones(1, 4))).sum().backward()  # gradient norm 2000
    wrapper.step()
    torch.testing.assert_close((model.weight - before).norm(), torch.tensor(0.5))


class _Declaring(torch.nn.Module):
    """An objective-like module declaring its own groups: biases and the norm exempt from weight
    decay and LARS adaptation, the head at half the lr."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)

    def param_groups(self):
        from facerep.types import ParamGroup

        exempt = [self.body.bias, self.norm.weight, self.norm.bias, self.head.bias]
        return [ParamGroup(exempt, weight_decay=0.0, adapt=False, name="biases+norms"), ParamGroup([self.head.weight], lr_scale=0.5)]


def test_objective_declared_groups_exempt_from_lars_and_decay():
    torch.manual_seed(0)
    model = _Declaring()
    cfg = TrainConfig(optimizer=OptimizerConfig(type="lars", lr=0.5, weight_decay=0.1, momentum=0.0, no_decay=()))
    wrapper, _ = build_optim_wrapper(model, cfg, global_batch=8, device_type="cpu")
    groups = wrapper.optimizer.param_groups
    assert [len(g["params"]) for g in groups] == [4, 1, 1], "declared groups first, then the rest (body.weight)"
    assert groups[0]["weight_decay"] == 0.0 and groups[0]["always_adapt"] is False
    assert groups[1]["lr"] == pytest.approx(0.25) and groups[1]["weight_decay"] == 0.1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.head(model.norm(model.body(torch.randn(5, 4)))).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    wrapper.step()
    for n in ("body.bias", "norm.weight", "head.bias"):  # exempt: a plain SGD step, lr 0.5
        torch.testing.assert_close(model.get_parameter(n), before[n] - 0.5 * grads[n], rtol=0, atol=1e-6)
    w, g = before["body.weight"], grads["body.weight"]  # adapted: LARS trust ratio with weight decay
    ratio = 0.001 * w.norm() / (g.norm() + 0.1 * w.norm())
    torch.testing.assert_close(model.body.weight, w - 0.5 * ratio * (g + 0.1 * w), rtol=1e-5, atol=1e-7)


def test_declared_groups_are_checked():
    from facerep.types import ParamGroup

    model = _Declaring()
    model.param_groups = lambda: [ParamGroup([model.head.bias], weight_decay=0.1, adapt=False, name="bad")]
    with pytest.raises(ConfigError, match=r"group 0 \(bad\) asks for no LARS adaptation but has weight decay 0.1"):
        build_optim_wrapper(model, TrainConfig(optimizer=OptimizerConfig(type="lars")), 8, "cpu")
    model.param_groups = lambda: [ParamGroup([model.head.bias]), ParamGroup([model.head.bias], name="again")]
    with pytest.raises(ConfigError, match="repeats a parameter"):
        build_optim_wrapper(model, TrainConfig(), 8, "cpu")
