"""Two gloo processes, each with half of a global batch, give the one-process loss (the mean of
their losses, as DDP averages) and the same centre, whose update all-reduces the batch mean."""

from __future__ import annotations

import _pros_dist
import pytest
import torch
import torch.distributed as tdist

from facerep.prototypes import Centre
from facerep.testing.plugin import run_in_gloo

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(), reason="needs torch.distributed with gloo")


def test_two_processes_give_the_one_process_loss_and_centre(tmp_path):
    ranks = run_in_gloo(_pros_dist.half, 2, tmp_path)
    student, teacher = _pros_dist.global_batch()
    centre = Centre(_pros_dist.K, 0.9)
    single = _pros_dist.step(student, teacher, centre)
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single, rtol=1e-5, atol=1e-6)
    for r in ranks:
        torch.testing.assert_close(r["centre"], centre.centre, rtol=1e-6, atol=1e-7)
    assert centre.centre.abs().sum() > 0
