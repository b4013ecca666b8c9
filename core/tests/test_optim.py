"""Optimizers and per-iteration schedules built from TrainConfig."""

from __future__ import annotations

import math

import pytest
import torch
from mmengine.optim.scheduler import CosineAnnealingLR, CosineAnnealingParamScheduler

from facerep.config import LRSchedule, OptimizerConfig, TrainConfig
from facerep.engine.optim import LinearWarmupLR, build_optim_wrapper, build_schedulers, param_groups
from facerep.errors import ConfigError

_SCHEDULERS = {"FacerepLinearWarmupLR": LinearWarmupLR, "CosineAnnealingLR": CosineAnnealingLR,
               "CosineAnnealingParamScheduler": CosineAnnealingParamScheduler}


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
    # by default the warm-up reaches the peak on its last step (4 of 0..4), as mmengine's LinearLR and DINO
    assert lrs[:5] == pytest.approx([0.1 + 0.9 * k / 4 for k in range(5)]) and lrs[5] == pytest.approx(1.0)
    t = 10 - 5  # cosine from step 5 to 20 towards 0.01
    assert lrs[10] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * t / 15)) / 2)
    assert wds[0] == pytest.approx(0.04) and wds[10] == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * 10 / 20)) / 2)
    assert set(nodecay) == {0.0}


def _lrs(cfg: TrainConfig, steps: int) -> list[float]:
    wrapper, lr = build_optim_wrapper(torch.nn.Linear(2, 1), cfg, 1, "cpu")
    scheds = []
    for spec in build_schedulers(cfg, lr):
        spec = dict(spec)
        scheds.append(_SCHEDULERS[spec.pop("type")](wrapper, **spec))
    out = []
    for _ in range(steps):
        out.append(wrapper.optimizer.param_groups[0]["lr"])
        for s in scheds:
            s.step()
    return out


@pytest.mark.parametrize("w", [1, 2, 4])
@pytest.mark.parametrize("peak", ["last_warmup_step", "after_warmup"])
def test_warmup_from_zero_matches_dino_and_mae_formulas(peak, w):
    """DINO (utils.cosine_scheduler): np.linspace(0, lr, W) then cosine from lr at step W; MAE / MCF
    (util/lr_sched.py): lr * i / W for i < W, then lr * (1 + cos(pi (i - W) / (N - W))) / 2."""
    n, base = 12, 0.8
    cfg = TrainConfig(max_steps=n, optimizer=OptimizerConfig(type="sgd", lr=base, weight_decay=0.0),
                      schedule=LRSchedule(warmup_steps=w, warmup_start_factor=0.0, warmup_peak=peak))
    got = _lrs(cfg, n)
    warm = [base * i / max(w - 1, 1) for i in range(w)] if peak == "last_warmup_step" else [base * i / w for i in range(w)]
    cosine = [base * (1 + math.cos(math.pi * (i - w) / (n - w))) / 2 for i in range(w, n)]
    assert got == pytest.approx(warm + cosine, abs=1e-12)
    assert got[0] == 0.0


def test_per_tensor_clipping_scales_each_gradient_on_its_own():
    """DINO's clip_gradients: every tensor with norm > c is scaled to c (+1e-6), the others are
    left alone; the global mode scales all by one factor."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    grads = [torch.randn_like(p) * s for p, s in zip(model.parameters(), (10.0, 0.01, 3.0, 0.2), strict=True)]
    for mode in ("per_tensor", "global"):
        cfg = TrainConfig(grad_clip=1.0, grad_clip_mode=mode, optimizer=OptimizerConfig(type="sgd", lr=1.0, momentum=0.0, weight_decay=0.0))
        wrapper, _ = build_optim_wrapper(model, cfg, 1, "cpu")
        before = [p.detach().clone() for p in model.parameters()]
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        wrapper.step()
        steps = [b - p.detach() for b, p in zip(before, model.parameters(), strict=True)]
        if mode == "per_tensor":
            want = [g * min(1.0, 1.0 / (float(g.norm()) + 1e-6)) for g in grads]
        else:
            total = float(torch.stack([g.norm() for g in grads]).norm())
            want = [g * min(1.0, 1.0 / (total + 1e-6)) for g in grads]
        for s, g in zip(steps, want, strict=True):
            torch.testing.assert_close(s, g, rtol=1e-5, atol=1e-7)
        with torch.no_grad():
            for p, b in zip(model.parameters(), before, strict=True):
                p.copy_(b)


def test_fp16_uses_a_dynamic_loss_scaler_on_cpu_too():
    """fp16: torch's GradScaler scales the loss, unscales before clipping, skips a step whose
    gradients overflowed (halving the scale) and is checkpointed with the optimizer."""
    model = torch.nn.Linear(3, 1, bias=False)
    cfg = TrainConfig(precision="fp16", grad_clip=1e3, optimizer=OptimizerConfig(type="sgd", lr=0.1, momentum=0.0, weight_decay=0.0))
    wrapper, _ = build_optim_wrapper(model, cfg, 1, "cpu")
    scale = wrapper.loss_scaler.get_scale()
    assert scale == 2.0**16
    before = model.weight.detach().clone()
    loss = model(torch.ones(1, 3)).sum()
    wrapper.backward(loss)
    torch.testing.assert_close(model.weight.grad, torch.full((1, 3), scale))  # scaled
    wrapper.step()
    torch.testing.assert_close(model.weight, before - 0.1, rtol=0, atol=1e-6)  # unscaled update
    wrapper.zero_grad()
    wrapper.backward(model(torch.full((1, 3), float("inf"))).sum())
    kept = model.weight.detach().clone()
    wrapper.step()
    assert torch.equal(model.weight, kept) and wrapper.loss_scaler.get_scale() == scale / 2
    assert wrapper.state_dict()["loss_scaler"]["scale"] == scale / 2


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
