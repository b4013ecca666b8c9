"""Work of each process of the 2-process gloo test (imported by name in the spawned processes)."""

from __future__ import annotations

import torch

from facerep_mcf.losses import masked_pair_contrastive_loss


def global_batch(n: int = 8, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def contrast_half(rank: int, world: int) -> dict:
    q, k = global_batch()
    b = q.shape[0] // world
    q_local = q[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    loss = masked_pair_contrastive_loss(q_local, k[rank * b : (rank + 1) * b], 0.2)
    loss.backward()
    return {"loss": loss.detach(), "grad": q_local.grad}
