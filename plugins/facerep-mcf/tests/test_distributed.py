"""The contrastive term gathers keys across processes: two gloo processes, each with half of a
global batch, give the one-process loss (the mean of their losses, as DDP averages) and gradients."""

from __future__ import annotations

import _mcf_dist
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from facerep_mcf.losses import masked_pair_contrastive_loss

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(), reason="needs torch.distributed with gloo")


def test_two_processes_give_the_one_process_loss_and_gradient(tmp_path):
    mp.spawn(_mcf_dist.worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    q, k = _mcf_dist.global_batch()
    q = q.clone().requires_grad_(True)
    single = masked_pair_contrastive_loss(q, k, 0.2)
    single.backward()
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single.detach(), rtol=1e-5, atol=1e-6)
    # each rank's gradient is w.r.t. the mean over its half; DDP averages: (g_r / 2) = the slice of the global gradient
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]) / 2, q.grad, rtol=1e-5, atol=1e-7)
