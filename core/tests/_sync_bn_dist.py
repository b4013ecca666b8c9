"""Run in gloo processes by ``test_sync_bn.py``: a small conv + BatchNorm net on half of a fixed
global batch per process, with ``CPUSyncBatchNorm``."""

from __future__ import annotations

import torch
from torch import nn

from facerep.engine.sync_bn import convert_sync_batchnorm


def net() -> nn.Module:
    torch.manual_seed(0)  # float64: the comparison is exact up to rounding, even for near-zero gradients
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2, momentum=None)).double()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(8, 3, 6, 6, generator=g, dtype=torch.float64) * 2 + 1, torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64))


def loss_of(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((out - target) ** 2 * torch.arange(1, 3, dtype=torch.float64).view(1, 2, 1, 1)).sum()


def half(rank: int, world: int) -> dict:
    model, n = convert_sync_batchnorm(net().train(), cuda=False)
    x, target = global_batch()
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    xr = x[part].clone().requires_grad_(True)
    for _ in range(2):  # two steps: running statistics, and momentum=None's cumulative average
        model.zero_grad()
        out = model(xr)
        loss_of(out, target[part]).backward()
    return {"n_bn": n, "out": out.detach(), "x_grad": xr.grad, "params": {k: p.grad for k, p in model.named_parameters()},
            "buffers": dict(model.named_buffers())}
