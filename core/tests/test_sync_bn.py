"""``train.sync_bn`` on CPU: two gloo processes with ``CPUSyncBatchNorm``, each holding half of a
global batch, compute what one BatchNorm over the whole batch computes — outputs, input and
parameter gradients, running statistics. (The ``facerep run`` path under torchrun:
``integration_tests/test_distributed_run.py``.)"""

from __future__ import annotations

import _sync_bn_dist as sbd
import pytest
import torch
import torch.distributed as tdist

from facerep.engine.sync_bn import CPUSyncBatchNorm, convert_sync_batchnorm
from facerep.testing.plugin import run_in_gloo

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(), reason="needs torch.distributed with gloo")


def test_two_processes_normalise_over_the_global_batch(tmp_path):
    ranks = run_in_gloo(sbd.half, 2, tmp_path)
    model = sbd.net().train()
    x, target = sbd.global_batch()
    x = x.clone().requires_grad_(True)
    for _ in range(2):
        model.zero_grad()
        out = model(x)
        sbd.loss_of(out, target).backward()
    assert ranks[0]["n_bn"] == 2
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach(), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), x.grad, rtol=1e-9, atol=1e-10)
    for name, p in model.named_parameters():  # each process's share of the gradient; DDP then adds them up
        torch.testing.assert_close(ranks[0]["params"][name] + ranks[1]["params"][name], p.grad, rtol=1e-9, atol=1e-10)
    for name, b in model.named_buffers():
        for r in ranks:
            torch.testing.assert_close(r["buffers"][name].to(b.dtype), b, rtol=1e-9, atol=1e-10)


def test_conversion_keeps_the_tensors_and_a_single_process_is_plain_batchnorm():
    model = sbd.net()
    weight = model[1].weight
    converted, n = convert_sync_batchnorm(model, cuda=False)
    assert n == 2 and isinstance(converted[1], CPUSyncBatchNorm) and converted[1].weight is weight
    assert set(converted.state_dict()) == set(sbd.net().state_dict())
    x, _ = sbd.global_batch()
    torch.testing.assert_close(converted.train()(x), sbd.net().train()(x))  # no process group: BatchNorm's own path
    assert convert_sync_batchnorm(converted, cuda=False)[1] == 0
