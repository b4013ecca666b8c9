"""The contrastive term gathers keys across processes: two gloo processes, each with half of a
global batch, give the one-process loss (the mean of their losses, as DDP averages) and gradients."""

from __future__ import annotations

import _mcf_dist
import pytest
import torch
import torch.distributed as tdist

from facerep.testing.plugin import run_in_gloo
from facerep_mcf.losses import masked_pair_contrastive_loss

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(), reason="needs torch.distributed with gloo")


def test_two_processes_give_the_one_process_loss_and_gradient(tmp_path):
    ranks = run_in_gloo(_mcf_dist.contrast_half, 2, tmp_path)
    q, k = _mcf_dist.global_batch()
    q = q.clone().requires_grad_(True)
    single = masked_pair_contrastive_loss(q, k, 0.2)
    single.backward()
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single.detach(), rtol=1e-5, atol=1e-6)
    # each rank's gradient is w.r.t. the mean over its half; DDP averages: (g_r / 2) = the slice of the global gradient
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]) / 2, q.grad, rtol=1e-5, atol=1e-7)
