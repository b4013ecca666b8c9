"""Work of each process of the 2-process gloo test (imported by name in the spawned processes)."""

from __future__ import annotations

import torch

from facerep_farl.losses import image_text_contrastive_loss


def global_batch(n: int = 8, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def itc_half(rank: int, world: int) -> dict:
    u, w = global_batch()
    b = u.shape[0] // world
    u_local = u[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    w_local = w[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    scale = torch.tensor(7.0, requires_grad=True)
    loss = image_text_contrastive_loss(u_local, w_local, scale)
    loss.backward()
    return {"loss": loss.detach(), "gu": u_local.grad, "gw": w_local.grad, "gs": scale.grad}
