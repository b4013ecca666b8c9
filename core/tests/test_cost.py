"""The cost of a run before it starts (``facerep.cost``): FLOPs against published figures, exact
scaling with the batch, accumulation and processes, parameters by part, activation bytes that grow
with the batch, and a dry-run-like estimate of a tiny run."""

from __future__ import annotations

import copy
import math

import attrs
import pytest
import timm
import torch

from facerep.config import RunConfig, structure
from facerep.cost import Cost, count_flops, estimate_cost, format_cost, forward_flops
from facerep.errors import ConfigError

TOY = {
    "name": "toy",
    "seed": 3,
    "data": {"name": "local.noise"},
    "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
    "objective": {"name": "local.toy", "params": {"crop": 24}},
    "train": {"max_steps": 50, "batch_size": 8, "optimizer": {"type": "sgd", "lr": 0.05}, "channels_last": False},
}


def _cfg(data: dict, **train) -> RunConfig:
    data = copy.deepcopy(data)
    data["train"].update(train)
    return structure(data, RunConfig)


@pytest.mark.parametrize(("model", "published"), [("resnet50", 4.1e9), ("vit_base_patch16_224", 17.6e9)])
def test_forward_flops_match_published_figures(model, published):
    """Published "FLOPs" (torchvision's and timm's tables, the papers) are multiply-adds: half of
    torch's count."""
    torch.manual_seed(0)
    net = timm.create_model(model, pretrained=False).eval()
    macs = forward_flops(net, torch.zeros(1, 3, 224, 224)) / 2
    assert abs(macs - published) / published < 0.05, f"{model}: {macs / 1e9:.2f} GMACs, published {published / 1e9} G"


def test_attention_is_counted_on_the_cpu():
    """torch's counter has no formula for the CPU attention kernel; without ours a ViT-B/16 loses
    its 0.73 GMACs of attention (12 layers x 2 x 197^2 x 768) and counts 16.85 instead of 17.58."""
    q = torch.randn(1, 12, 197, 64, requires_grad=True)
    fwd = count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q)
    assert fwd == 2 * 2 * 12 * 197 * 197 * 64  # QK^T and AV, 2 FLOPs per multiply-add
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert count_flops(out.sum().backward) == 5 * fwd // 2  # the scores recomputed + 4 gradient products, each half the forward
    vit = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    assert abs(forward_flops(vit, torch.zeros(1, 3, 224, 224)) / 2 - 17.58e9) / 17.58e9 < 0.005


def test_flops_scale_exactly_with_batch_accumulation_and_processes(local_plugins):
    base = estimate_cost(_cfg(TOY), local_plugins, time_steps=0)
    big = estimate_cost(_cfg(TOY, batch_size=16, accumulate_steps=3), local_plugins, time_steps=0, world_size=4)
    assert base.counted_at == big.counted_at == (2, 4)
    assert base.flops_per_sample == big.flops_per_sample > 0
    assert big.step_flops == base.step_flops * 2 * 3
    assert big.global_step_flops == big.step_flops * 4
    assert big.run_flops == big.global_step_flops * 50
    assert big.gpu_step_seconds == pytest.approx(base.gpu_step_seconds * 6)  # per process: the processes run in parallel
    # a training step of the toy: forward + backward of the backbone on both views, about 3 forwards
    (side, fwd), = base.backbone_forward
    assert side == 24 and base.views == ((3, 24, 24), (3, 24, 24))
    assert 2.5 * 2 * fwd < base.flops_per_sample < 3.2 * 2 * fwd


def test_activation_bytes_grow_linearly_with_the_batch(local_plugins, monkeypatch):
    monkeypatch.setenv("FACEREP_CPU_BF16", "emulated")  # count bf16 even where this CPU would train in fp32
    cost = estimate_cost(_cfg(TOY), local_plugins, time_steps=0)
    assert cost.activation_bytes_per_sample > 0
    # resnet10t on 2 x 24 px views in fp32 saves at least its block outputs: 64 channels at 12 px, twice
    assert cost.activation_bytes_per_sample > 2 * 64 * 12 * 12 * 4
    wider = attrs.evolve(cost, batch_size=64)
    assert wider.activation_bytes - cost.activation_bytes == pytest.approx(56 * cost.activation_bytes_per_sample)
    bf16 = estimate_cost(_cfg(TOY, precision="bf16"), local_plugins, time_steps=0)
    assert bf16.activation_bytes_per_sample < 0.75 * cost.activation_bytes_per_sample  # 2 bytes a value


def test_parameters_by_part_toy(local_plugins):
    cost = estimate_cost(_cfg(TOY), local_plugins, time_steps=0)
    parts = {p.name: p for p in cost.parts}
    backbone = timm.create_model("resnet10t", num_classes=0)
    n_backbone = sum(p.numel() for p in backbone.parameters())
    assert parts["backbone"].total == parts["backbone"].trainable == n_backbone
    head = 512 * 16 + 16  # the toy's linear projector from resnet10t's 512 features
    assert parts["objective heads"].total == parts["objective heads"].trainable == head
    assert parts["frozen copies"].total == head and parts["frozen copies"].trainable == 0  # its EMA copy


def test_parameters_by_part_moco_v2_momentum_encoder():
    """frl.moco_v2: the key encoder and key projector are frozen copies of the query ones."""
    pytest.importorskip("facerep_frl")
    from facerep.plugins import get_plugins

    cfg = structure({
        "name": "moco_cost",
        "data": {"name": "core.synthetic", "params": {"n": 16, "size": 40}},
        "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
        "objective": {"name": "frl.moco_v2", "params": {"queue_size": 64, "view_size": 32}},
        "train": {"batch_size": 8, "max_steps": 10},
    }, RunConfig)
    cost = estimate_cost(cfg, get_plugins(), time_steps=0)
    parts = {p.name: p for p in cost.parts}
    assert parts["backbone"].trainable == parts["backbone"].total > 0
    assert parts["objective heads"].trainable == parts["objective heads"].total > 0
    assert parts["frozen copies"].trainable == 0
    assert parts["frozen copies"].total == parts["backbone"].total + parts["objective heads"].total
    assert cost.buffer_values >= 64 * 128  # the queue of keys
    # the key encoder's forward is counted too: per sample, the query view's forward + backward (about
    # two forwards) and the key view's forward: about 4 forwards (8 if the count missed nothing twice)
    (side, fwd), = cost.backbone_forward
    assert side == 32 and 3.5 * fwd < cost.flops_per_sample < 4.3 * fwd


def test_dry_run_estimate_of_a_tiny_run(local_plugins):
    cost = estimate_cost(_cfg(TOY), local_plugins, time_steps=1, gpu_tflops=100.0, gpu_util=0.5)
    assert isinstance(cost, Cost) and cost.host is not None
    numbers = [cost.step_flops, cost.global_step_flops, cost.activation_bytes, cost.state_bytes, cost.gpu_run_seconds,
               cost.host.step_seconds, cost.host.run_seconds, cost.host.setup_seconds]
    assert all(math.isfinite(x) and x > 0 for x in numbers), numbers
    assert cost.host.run_seconds > cost.host.step_seconds * 50
    assert cost.gpu_run_seconds == pytest.approx(50 * cost.step_flops / (100e12 * 0.5))
    text = format_cost(cost)
    for part in ("backbone", "objective heads", "frozen copies", "FLOP", "multiply-add", "activations", "time on this host",
                 "100 TFLOP/s peak at 50%"):
        assert part in text, part


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without CUDA")
def test_a_cuda_run_is_not_timed_on_a_cpu_host(local_plugins):
    cost = estimate_cost(_cfg(TOY, device="cuda", precision="fp16"), local_plugins)
    assert cost.host is None and cost.step_flops > 0
    assert any("no CUDA device" in n for n in cost.notes)
    assert "H100" in cost.gpu_note and cost.gpu_tflops == 989.0
    assert "not measured" in format_cost(cost)


def test_unreadable_data_is_replaced_by_synthetic_faces(local_plugins, tmp_path):
    data = copy.deepcopy(TOY)
    data["data"] = {"name": "core.image_folder", "params": {"roots": [str(tmp_path / "absent")], "resize": 48}}
    cost = estimate_cost(_cfg(data), local_plugins, time_steps=0)
    assert cost.views == ((3, 24, 24), (3, 24, 24))
    assert any("synthetic 48 px faces" in n for n in cost.notes)


def _picky(monkeypatch, at_least: int) -> None:
    """The toy objective refusing a first batch below ``at_least`` (as FaRL's k-means tokenizer does)."""
    from facerep.testing.toy import ToyContrastive

    forward = ToyContrastive.forward

    def picky(self, views):
        if len(views[0]) < at_least and not getattr(self, "_fitted", False):
            raise ValueError(f"k-means: {len(views[0])} points for {at_least} centroids")
        self._fitted = True
        return forward(self, views)

    monkeypatch.setattr(ToyContrastive, "forward", picky)


def test_an_objective_refusing_a_small_first_batch_is_counted_from_a_larger_one(local_plugins, monkeypatch):
    _picky(monkeypatch, 8)
    cost = estimate_cost(_cfg(TOY, batch_size=32), local_plugins, time_steps=0)
    assert cost.counted_at == (8, 16) and cost.flops_per_sample > 0
    assert any("refuses a first batch of 2 to 4 (ValueError: k-means: 4 points" in n for n in cost.notes), cost.notes
    _picky(monkeypatch, 32)  # a first batch above 16 is not tried: too slow for a dry run at paper scale
    with pytest.raises(ConfigError, match="refuses a first batch of 16 samples"):
        estimate_cost(_cfg(TOY, batch_size=64), local_plugins, time_steps=0)
