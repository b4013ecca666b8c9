"""Gradient accumulation (``train.accumulate_steps``) in the runner's own training step: k
micro-batches give the gradient of their union, DDP synchronises once per step, the objective hears
about every micro-batch, the loss scaler and clipping act once per step, and the stream lays out
micro-batches so that the world size does not change what each one holds."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from facerep.engine.model import PretrainModel, _train_step
from facerep.engine.optim import build_optim_wrapper
from facerep.engine.stream import StreamSampler
from facerep.testing.steps import runner_steps
from facerep.types import LossOutput


class _PerSample(nn.Module):
    """An objective whose loss is a mean of per-sample terms and without BatchNorm: k micro-batches
    of B and one batch of k B must give the same gradient. Records the runner's calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3), nn.GELU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
        self.calls: list[str] = []

    def forward(self, views: list[torch.Tensor], extras: dict | None = None) -> LossOutput:
        self.calls.append(f"forward({views[0].shape[0]})")
        z = self.backbone(views[0])
        loss = (z - extras["target"]).pow(2).sum(1).mean() if extras else z.pow(2).sum(1).mean()
        return LossOutput(loss, {"z_mean": float(z.detach().mean())})

    def after_micro_batch(self, step: int, micro: int, n_micro: int) -> None:
        self.calls.append(f"micro({step},{micro}/{n_micro})")

    def before_optimizer_step(self, step: int) -> None:
        self.calls.append(f"before({step})")

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        self.calls.append(f"after({step})")


def _batches(n_steps: int, size: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"views": [torch.randn(size, 3, 10, 10, generator=g)], "extras": {"target": torch.randn(size, 5, generator=g)}}
            for _ in range(n_steps)]


TRAIN = {"max_steps": 3, "optimizer": {"type": "adamw", "lr": 0.01, "weight_decay": 0.05}, "grad_clip": 0.5, "grad_clip_mode": "per_tensor",
         "schedule": {"warmup_steps": 2, "warmup_start_factor": 0.0}}


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_train_like_one_batch_of_their_union(k):
    one, acc = _PerSample(), _PerSample()
    batches = _batches(3, 8)
    logs_one, _ = runner_steps(one, batches, TRAIN)
    logs_acc, _ = runner_steps(acc, batches, {**TRAIN, "accumulate_steps": k})
    for p, q in zip(one.parameters(), acc.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert [s["loss"] for s in logs_acc] == pytest.approx([s["loss"] for s in logs_one], rel=1e-5)  # logged: mean over micro-batches
    b = 8 // k
    expected = [c for j in range(k) for c in (f"forward({b})", f"micro(0,{j}/{k})")] + ["before(0)", "after(0)"]
    assert acc.calls[: 2 * k + 2] == expected


def test_the_learning_rate_scales_with_the_samples_of_one_optimizer_step():
    obj = _PerSample()
    train = {**TRAIN, "accumulate_steps": 4, "optimizer": {**TRAIN["optimizer"], "lr_reference_batch": 4}, "schedule": {}}
    _, wrapper = runner_steps(obj, _batches(1, 8), train)
    assert wrapper.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.02)  # 0.01 x 8 / 4: the step's 8 samples


class _FakeDDP(nn.Module):
    """Stands in for DDP: records whether each forward ran inside ``no_sync``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.synced: list[bool] = []
        self._in_no_sync = False

    @contextlib.contextmanager
    def no_sync(self):
        self._in_no_sync = True
        try:
            yield
        finally:
            self._in_no_sync = False

    def forward(self, *args, **kwargs):
        self.synced.append(not self._in_no_sync)
        return self.module(*args, **kwargs)


def test_ddp_synchronises_gradients_on_the_last_micro_batch_only(monkeypatch):
    from facerep.config import OptimizerConfig, TrainConfig
    from facerep.engine import model as model_module

    class Floats(PretrainModel):
        def prepare(self, data):
            return data["views"], data.get("extras")

    model = Floats(_PerSample(), accumulate_steps=3)
    caller = _FakeDDP(model)
    wrapper, _ = build_optim_wrapper(model, TrainConfig(optimizer=OptimizerConfig(type="sgd", lr=0.1)), 6, "cpu")
    hub = model_module.MessageHub.get_instance("test_ddp_sync")
    hub.update_info("iter", 0)
    hub.update_info("max_iters", 2)
    monkeypatch.setattr(model_module.MessageHub, "get_current_instance", classmethod(lambda cls: hub))
    for batch in _batches(2, 6):
        _train_step(model, caller, batch, wrapper)
    assert caller.synced == [False, False, True, False, False, True]


def test_fp16_accumulation_matches_one_batch():
    one, acc = _PerSample(), _PerSample()
    batches = [{"views": [b["views"][0] * 0.1], "extras": {"target": b["extras"]["target"] * 0.1}} for b in _batches(3, 8)]
    train = {**TRAIN, "precision": "fp16", "grad_clip_mode": "global", "optimizer": {"type": "sgd", "lr": 0.05, "weight_decay": 0.0}}
    _, w_one = runner_steps(one, batches, train)
    _, w_acc = runner_steps(acc, batches, {**train, "accumulate_steps": 2})
    assert w_acc.loss_scaler.get_scale() == w_one.loss_scaler.get_scale() == 2.0**16  # no overflow: every step taken
    for p, q in zip(one.parameters(), acc.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)  # fp16 autocast: activations rounded to 11 bits


def test_an_overflow_in_one_micro_batch_skips_the_step_once():
    """The loss scaler checks the accumulated gradient once per optimizer step: an fp16 overflow in
    micro-batch 2 skips the whole step and halves the scale once (not once per micro-batch)."""
    obj = _PerSample()
    before = [p.detach().clone() for p in obj.parameters()]
    batch = _batches(1, 8)[0]
    batch["views"][0][4:] *= 1e3  # finite loss, fp16 gradients beyond 65504 once scaled by 2^16
    logs, wrapper = runner_steps(obj, [batch], {**TRAIN, "precision": "fp16", "accumulate_steps": 2})
    assert wrapper.loss_scaler.get_scale() == 2.0**15
    assert all(torch.equal(p, b) for p, b in zip(obj.parameters(), before, strict=True))
    assert logs[0]["loss"] > 0 and obj.calls.count("before(0)") == 1


def test_a_non_finite_micro_batch_names_its_step_and_micro_batch():
    from facerep.errors import TrainingError

    obj = _PerSample()
    batches = _batches(1, 4)
    batches[0]["views"][0][3] = float("nan")
    with pytest.raises(TrainingError, match=r"at step 1, micro-batch 2 of 2"):
        runner_steps(obj, batches, {**TRAIN, "accumulate_steps": 2})


@pytest.mark.parametrize("world", [1, 2, 4])
def test_micro_batch_j_holds_the_same_samples_for_any_world_size(world):
    """Global micro-batch j of step s = positions [(s k + j) W B, (s k + j + 1) W B) split by rank,
    so a world of W processes x B sees, micro-batch by micro-batch, what one process x W B sees."""
    k, global_micro = 3, 8
    b = global_micro // world
    streams = []
    for rank in range(world):
        it = iter(StreamSampler(b, rank, world, accumulate_steps=k))
        streams.append([[next(it) for _ in range(b * k)] for _ in range(2)])  # 2 steps, one loader batch each
    for step in range(2):
        for j in range(k):
            union = [p for rank in range(world) for p in streams[rank][step][j * b : (j + 1) * b]]
            first = (step * k + j) * global_micro
            assert union == list(range(first, first + global_micro))


def test_objectives_without_the_hook_still_train():
    """API <= 1.3 objectives: no after_micro_batch, the step still accumulates."""
    old = _PerSample()
    old.after_micro_batch = None  # instance attribute hides the method: getattr(...) is None
    ref = copy.deepcopy(old)
    runner_steps(old, _batches(2, 4), {**TRAIN, "accumulate_steps": 2})
    runner_steps(ref, _batches(2, 4), TRAIN)
    for p, q in zip(old.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not any(c.startswith("micro") for c in old.calls)
