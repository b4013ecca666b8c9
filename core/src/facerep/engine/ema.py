"""Momentum (EMA) updates of a target network, as used by MoCo key encoders and self-distillation
teachers: theta_t <- m * theta_t + (1 - m) * theta_s, with optional cosine schedule for m
(BYOL/DINO: m goes from m0 to 1 over training)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["cosine_momentum", "momentum_update"]


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, momentum: float, *, copy_buffers: bool = False) -> None:
    """EMA of parameters. Buffers (BN running statistics) are left to the target's own forward
    passes, as in MoCo, unless ``copy_buffers`` is set."""
    t_params = [p for p in target.parameters()]
    s_params = [p.detach() for p in source.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("momentum_update: target and source have different parameter lists")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
    if copy_buffers:
        for t_buf, s_buf in zip(target.buffers(), source.buffers(), strict=True):
            t_buf.copy_(s_buf)


def cosine_momentum(step: int, max_steps: int, base: float, final: float = 1.0) -> float:
    """Cosine schedule from ``base`` at step 0 to ``final`` at ``max_steps``."""
    if max_steps <= 0:
        return base
    progress = min(max(step / max_steps, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
