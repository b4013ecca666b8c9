"""Helpers of the facerep-frl tests: a batch-independent stub backbone and the training loops the
2-process gloo test runs in each process and, for reference, in one process.

Imported by name (``_frl_helpers``) in the processes ``torch.multiprocessing.spawn`` starts; the
tests folder is on ``sys.path`` (conftest), which spawn hands to its children.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from facerep import dist
from facerep.types import Features


class StubBackbone(nn.Module):
    """Conv - ReLU - global average pool - Linear; with ``bn`` a BatchNorm2d after the conv.

    Without BN every sample's output depends on that sample only, so a batch split over processes
    gives exactly what one process gives on the whole batch.
    """

    embed_dim = 8

    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.fc = nn.Linear(8, self.embed_dim)

    @property
    def layer_dims(self) -> list[int]:
        return []

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0

    def forward(self, x: torch.Tensor) -> Features:
        return Features(pooled=self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3))))


def batch(step: int, n: int, sizes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    """Deterministic global batch of step ``step``: one ``(n, 3, s, s)`` tensor per view size."""
    g = torch.Generator().manual_seed(1000 * seed + step)
    return [torch.randn(n, 3, s, s, generator=g) for s in sizes]


def local(views: list[torch.Tensor]) -> list[torch.Tensor]:
    """This process's contiguous slice of a global batch (as the runner's sampler)."""
    w, r = dist.world_size(), dist.rank()
    b = views[0].shape[0] // w
    return [v[r * b : (r + 1) * b] for v in views]


def _sgd(module: nn.Module, lr: float) -> None:
    """Average gradients over processes (what DDP does) and take a plain SGD step."""
    with torch.no_grad():
        for p in module.parameters():
            if p.grad is not None:
                g = dist.all_reduce_sum(p.grad) / dist.world_size()
                p -= lr * g
                p.grad = None


def make_swav(**overrides: Any) -> nn.Module:
    from facerep_frl.swav import SwAVObjective, SwAVParams

    torch.manual_seed(0)
    params = dict(n_prototypes=6, out_dim=4, hidden_dim=0, global_crops=2, global_size=8, local_crops=1, local_size=4,
                  freeze_prototypes_steps=1, queue_length=16, queue_start_step=1)
    params.update(overrides)
    return SwAVObjective(SwAVParams(**params), backbone=StubBackbone())


def run_swav(steps: int = 4, global_batch: int = 8) -> dict[str, Any]:
    """SwAV steps; returns per-step losses and codes (as seen by this process) and the final state."""
    import facerep_frl.swav as swav

    obj = make_swav()
    recorded: list[torch.Tensor] = []
    original = swav.sinkhorn_knopp

    def recording(scores: torch.Tensor, eps: float, n_iters: int) -> torch.Tensor:
        codes = original(scores, eps, n_iters)
        recorded.append(codes)
        return codes

    swav.sinkhorn_knopp = recording
    try:
        losses, codes = [], []
        for step in range(steps):
            recorded.clear()
            out = obj(local(batch(step, global_batch, (8, 8, 4))))
            out.loss.backward()
            obj.before_optimizer_step(step)
            _sgd(obj, lr=0.5)
            obj.after_optimizer_step(step, steps)
            losses.append(out.loss.detach())
            codes.append([c.clone() for c in recorded])
    finally:
        swav.sinkhorn_knopp = original
    return {"losses": torch.stack(losses), "codes": codes, "state": {k: v.clone() for k, v in obj.state_dict().items()}}


def make_moco(bn: bool = False, **overrides: Any) -> nn.Module:
    from facerep_frl.moco import MoCoV2Objective, MoCoV2Params

    torch.manual_seed(0)
    params = dict(queue_size=16, momentum=0.9, temperature=0.2, out_dim=4, hidden_dim=8, view_size=8)
    params.update(overrides)
    return MoCoV2Objective(MoCoV2Params(**params), backbone=StubBackbone(bn=bn))


def run_moco(steps: int = 3, global_batch: int = 4) -> dict[str, Any]:
    obj = make_moco()
    losses, keys = [], []
    for step in range(steps):
        out = obj(local(batch(step, global_batch, (8, 8), seed=1)))
        keys.append(obj._pending.clone())
        out.loss.backward()
        obj.before_optimizer_step(step)
        _sgd(obj, lr=0.5)
        obj.after_optimizer_step(step, steps)
        losses.append(out.loss.detach())
    return {"losses": torch.stack(losses), "keys": keys, "state": {k: v.clone() for k, v in obj.state_dict().items()}}


def run_shuffle(per_rank: int = 3) -> dict[str, torch.Tensor]:
    from facerep_frl.moco import batch_shuffle, batch_unshuffle

    r = dist.rank()
    x = torch.arange(r * per_rank, (r + 1) * per_rank, dtype=torch.float32)[:, None]  # global sample indices
    shuffled, perm = batch_shuffle(x)
    return {"x": x, "shuffled": shuffled, "perm": perm, "unshuffled": batch_unshuffle(shuffled * 10, perm)}


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Entry point of each spawned process: join a gloo group, run every loop, save the results."""
    torch.set_num_threads(1)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {"swav": run_swav(), "moco": run_moco(), "shuffle": run_shuffle()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        tdist.destroy_process_group()
