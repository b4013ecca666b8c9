"""Image-text contrast over a global batch split across two gloo processes: the mean of their
losses is the one-process loss, and their gradients (averaged, as DDP does) are its gradients."""

from __future__ import annotations

import _farl_dist
import pytest
import torch
import torch.distributed as tdist

from facerep.testing.plugin import run_in_gloo
from facerep_farl.losses import image_text_contrastive_loss

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(), reason="needs torch.distributed with gloo")


def test_two_processes_give_the_one_process_loss_and_gradients(tmp_path):
    ranks = run_in_gloo(_farl_dist.itc_half, 2, tmp_path)
    u, w = (t.clone().requires_grad_(True) for t in _farl_dist.global_batch())
    scale = torch.tensor(7.0, requires_grad=True)
    single = image_text_contrastive_loss(u, w, scale)
    single.backward()
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["gu"] for r in ranks]) / 2, u.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.cat([r["gw"] for r in ranks]) / 2, w.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close((ranks[0]["gs"] + ranks[1]["gs"]) / 2, scale.grad, rtol=1e-5, atol=1e-7)
