"""Batch normalisation over the global batch of a multi-process run (``train.sync_bn``).

FRL (Bulat et al., ECCV 2022, §4) pretrains with SyncBN groups of 8 GPUs: the BatchNorm statistics
are those of all processes' samples together, which matters for contrastive objectives (a small
per-GPU batch leaks information through its own statistics). On CUDA facerep uses
``torch.nn.SyncBatchNorm``. That module refuses CPU tensors, so a gloo (CPU) run gets
:class:`CPUSyncBatchNorm`, written here: sums and sums of squares are all-reduced by a
differentiable all-reduce (its gradient is the all-reduce of the gradients; torch's own,
``torch.distributed.nn.functional.all_reduce``, is deprecated), so gradients reach every process's
inputs as they would through one BatchNorm over the global batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are over every process of the default group."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32 at least
        count = torch.full((1,), x.numel() / c, dtype=xf.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        # two passes (squared deviations from the global mean), not E[x^2] - mean^2, which cancels
        # when |mean| >> std (few samples per channel deep in a small network)
        shape = (1, c) + (1,) * (x.dim() - 2)
        var = _AllReduceSum.apply((xf - mean.view(shape)).square().sum(dims)) / n  # biased: what normalises the batch
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y  # fp32 for half inputs, as BatchNorm under autocast


def convert_sync_batchnorm(module: nn.Module, *, cuda: bool) -> tuple[nn.Module, int]:
    """Every BatchNorm layer of ``module`` in its synchronised form (torch's on CUDA,
    :class:`CPUSyncBatchNorm` otherwise); returns (module, count). The parameter and buffer tensors
    are the same objects (an objective's EMA pairs or an optimizer built before still see them) and
    state-dict keys do not change, so exported weights load into the plain backbone."""
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm | CPUSyncBatchNorm)]
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module), len(layers)
    for m in layers:  # same attributes, another forward: swap the class in place
        m.__class__ = CPUSyncBatchNorm
    return module, len(layers)
