"""Process-group helpers that are no-ops in a single process.

Losses take distributed behaviour as explicit calls to these helpers (never a hidden global), and
the same code runs on one CPU process, under ``torchrun`` with gloo on CPU, or NCCL on GPUs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather", "all_gather_with_grad", "all_reduce_sum", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place; returns ``x``."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


@torch.no_grad()
def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) along dim 0 in rank order; no gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank computed a loss on the full gathered tensor; the gradient of the summed loss
        # w.r.t. this rank's slice is the sum of all ranks' gradients for that slice.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // world_size()
        return grad[rank() * n : (rank() + 1) * n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather` but gradients flow back to each rank's own slice."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)
