"""Worker of the 2-process gloo test (imported by name in the spawned processes)."""

from __future__ import annotations

import torch
import torch.distributed as tdist

from facerep_mcf.losses import masked_pair_contrastive_loss


def global_batch(n: int = 8, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def worker(rank: int, world: int, init: str, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        q, k = global_batch()
        b = q.shape[0] // world
        q_local = q[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        loss = masked_pair_contrastive_loss(q_local, k[rank * b : (rank + 1) * b], 0.2)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": q_local.grad}, f"{out}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()
