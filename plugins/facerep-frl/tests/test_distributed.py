"""Two CPU processes (gloo) give what one process gives with the same global batch.

One spawn runs every distributed loop of :mod:`_frl_helpers` (SwAV with the queue, MoCo with
shuffling BN, the shuffle helpers); each rank gets the contiguous half of every global batch, and
gradients are averaged over ranks as DDP does. The one-process references run here.
"""

from __future__ import annotations

import _frl_helpers as helpers
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

WORLD = 2

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(), reason="needs torch.distributed with gloo")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("frl_dist")
    mp.spawn(helpers.worker, args=(WORLD, str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_swav_codes_losses_and_queue_match_one_process(ranks):
    single = helpers.run_swav()
    # the loss of each rank is the mean over its half: their mean is the one-process loss
    torch.testing.assert_close((ranks[0]["swav"]["losses"] + ranks[1]["swav"]["losses"]) / 2, single["losses"], rtol=1e-5, atol=1e-6)
    for step, codes in enumerate(single["codes"]):
        assert len(codes) == 2  # assignment crops 0 and 1
        for j, full in enumerate(codes):
            parts = [r["swav"]["codes"][step][j] for r in ranks]
            if step < 3:  # queue not full yet: codes of the batch only
                assert full.shape == (8, 6)
                torch.testing.assert_close(torch.cat(parts), full, rtol=1e-4, atol=1e-6)
            else:  # full queue: each rank balances its share of the queue with its half of the batch
                assert full.shape == (16 + 8, 6) and parts[0].shape == (8 + 4, 6)
                torch.testing.assert_close(torch.cat([parts[0][:8], parts[1][:8]]), full[:16], rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(torch.cat([parts[0][8:], parts[1][8:]]), full[16:], rtol=1e-4, atol=1e-6)
    for r in ranks:  # same queue (gathered in rank order), same weights
        for key, value in single["state"].items():
            torch.testing.assert_close(r["swav"]["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert int(single["state"]["queue_filled"]) == 16


def test_moco_losses_queue_and_key_encoder_match_one_process(ranks):
    single = helpers.run_moco()
    torch.testing.assert_close((ranks[0]["moco"]["losses"] + ranks[1]["moco"]["losses"]) / 2, single["losses"], rtol=1e-5, atol=1e-6)
    for step in range(3):  # shuffling BN hands every rank back the keys of its own samples
        torch.testing.assert_close(torch.cat([r["moco"]["keys"][step] for r in ranks]), single["keys"][step], rtol=1e-5, atol=1e-6)
    # the queue holds the gathered keys in rank order, in the ring order of one process
    for r in ranks:
        for key, value in single["state"].items():
            torch.testing.assert_close(r["moco"]["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert int(single["state"]["queue_ptr"]) == (3 * 4) % 16
    torch.testing.assert_close(single["state"]["queue"][:, 4:12], torch.cat(single["keys"][1:]).T)


def test_batch_shuffle_permutes_the_global_batch_and_unshuffle_restores_it(ranks):
    perms = [r["shuffle"]["perm"] for r in ranks]
    assert torch.equal(perms[0], perms[1]), "every rank must use the same permutation"
    assert sorted(perms[0].tolist()) == list(range(6))
    shuffled = torch.cat([r["shuffle"]["shuffled"] for r in ranks])[:, 0]
    torch.testing.assert_close(shuffled, perms[0].float())  # rank r holds samples perm[3r : 3r + 3]
    for r in ranks:
        torch.testing.assert_close(r["shuffle"]["unshuffled"], r["shuffle"]["x"] * 10)
