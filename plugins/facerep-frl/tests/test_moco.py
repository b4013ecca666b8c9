"""MoCo-v2: InfoNCE by hand, the momentum update, the ring-buffer queue and the exact update order."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from _frl_helpers import StubBackbone, batch, make_moco

from facerep.config import structure, unstructure
from facerep.errors import ConfigError
from facerep_frl.moco import MoCoV2Objective, MoCoV2Params, batch_shuffle, batch_unshuffle, info_nce


def test_info_nce_matches_a_hand_computed_value():
    # d = 2, T = 0.5, two queries, a queue of two negatives (columns).
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # k-_1 = (0, 1), k-_2 = (-1, 0)
    # query 1: q.k+ = 0.6, q.k- = (0, -1) -> logits (1.2, 0, -2)
    # query 2: q.k+ = 0.6, q.k- = (1, 0)  -> logits (1.2, 2, 0)
    l1 = -1.2 + math.log(math.exp(1.2) + math.exp(0.0) + math.exp(-2.0))
    l2 = -1.2 + math.log(math.exp(1.2) + math.exp(2.0) + math.exp(0.0))
    # = (-1.2 + log(3.320117 + 1 + 0.135335), -1.2 + log(3.320117 + 7.389056 + 1)) = (0.294129, 1.260373)
    assert (l1, l2) == pytest.approx((0.294129, 1.260373), abs=1e-5)
    assert info_nce(q, k, queue, temperature=0.5).item() == pytest.approx((l1 + l2) / 2, abs=1e-6)


def test_momentum_update_is_exact_after_a_step():
    obj = make_moco(bn=True, momentum=0.9)
    out = obj(batch(0, 4, (8, 8), seed=1))
    out.loss.backward()
    key_before = [p.clone() for p in [*obj.key_backbone.parameters(), *obj.key_projector.parameters()]]
    with torch.no_grad():
        for p in obj.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    query_after = [p.detach().clone() for p in [*obj.backbone.parameters(), *obj.projector.parameters()]]
    assert any(not torch.equal(a, b) for a, b in zip(key_before, query_after, strict=True)), "the step changed nothing"
    obj.after_optimizer_step(0, 10)
    key_after = [*obj.key_backbone.parameters(), *obj.key_projector.parameters()]
    for k0, q1, k1 in zip(key_before, query_after, key_after, strict=True):
        torch.testing.assert_close(k1, 0.9 * k0 + 0.1 * q1, rtol=0, atol=1e-6)  # theta_k <- m theta_k + (1 - m) theta_q
        assert not k1.requires_grad
    # BN running statistics of the key encoder are its own (not averaged from the query encoder)
    assert not torch.equal(obj.key_backbone.bn.running_mean, obj.backbone.bn.running_mean)


def test_queue_is_a_ring_buffer_overwriting_the_oldest_keys():
    obj = make_moco(queue_size=8)
    initial = obj.queue.clone()
    torch.testing.assert_close(initial.norm(dim=0), torch.ones(8))  # random unit keys to start with
    keys = [F.normalize(torch.randn(4, 4), dim=1) for _ in range(3)]
    obj.enqueue(keys[0])
    assert int(obj.queue_ptr) == 4
    torch.testing.assert_close(obj.queue[:, :4], keys[0].T)
    torch.testing.assert_close(obj.queue[:, 4:], initial[:, 4:])
    obj.enqueue(keys[1])
    assert int(obj.queue_ptr) == 0
    obj.enqueue(keys[2])  # overwrites keys[0], the oldest
    assert int(obj.queue_ptr) == 4
    torch.testing.assert_close(obj.queue, torch.cat([keys[2], keys[1]]).T)
    with pytest.raises(ValueError, match="multiple of the global batch 3"):
        obj.enqueue(keys[0][:3])


def _reference_moco(obj: MoCoV2Objective, batches: list[list[torch.Tensor]], lr: float) -> dict:
    """MoCo's reference loop, written out: q; momentum update; k; loss on the current queue;
    enqueue k; backward; SGD step."""
    f_q = copy.deepcopy(torch.nn.ModuleList([obj.backbone, obj.projector]))
    f_k = copy.deepcopy(torch.nn.ModuleList([obj.key_backbone, obj.key_projector]))
    queue, ptr, m, t = obj.queue.clone(), 0, obj.params.momentum, obj.params.temperature
    losses = []
    for x_q, x_k in batches:
        q = F.normalize(f_q[1](f_q[0](x_q).pooled), dim=1)
        with torch.no_grad():
            for pk, pq in zip(f_k.parameters(), f_q.parameters(), strict=True):
                pk.mul_(m).add_(pq, alpha=1 - m)
            k = F.normalize(f_k[1](f_k[0](x_k).pooled), dim=1)
        l_pos = (q * k).sum(1) / t
        l_neg = q @ queue.clone() / t
        loss = (-l_pos + torch.logsumexp(torch.cat([l_pos[:, None], l_neg], 1), dim=1)).mean()
        queue[:, ptr : ptr + len(k)] = k.T
        ptr = (ptr + len(k)) % queue.shape[1]
        f_q.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in f_q.parameters():
                p -= lr * p.grad
        losses.append(loss.item())
    return {"losses": losses, "queue": queue, "ptr": ptr, "f_k": f_k, "f_q": f_q}


def test_objective_follows_mocos_exact_update_order():
    obj = make_moco(bn=True, queue_size=12, momentum=0.7)  # BN: key statistics come from the key encoder's own batches
    batches = [batch(s, 4, (8, 8), seed=2) for s in range(4)]
    ref = _reference_moco(obj, batches, lr=0.5)
    losses = []
    for step, views in enumerate(batches):
        out = obj(views)
        obj.zero_grad()
        out.loss.backward()
        obj.before_optimizer_step(step)
        with torch.no_grad():
            for p in obj.parameters():
                if p.grad is not None:
                    p -= 0.5 * p.grad
        obj.after_optimizer_step(step, len(batches))
        losses.append(out.loss.item())
    assert losses == pytest.approx(ref["losses"], rel=1e-5)
    torch.testing.assert_close(obj.queue, ref["queue"])
    assert int(obj.queue_ptr) == ref["ptr"] == 4
    # our key encoder has taken the update the reference does at the start of the next step
    with torch.no_grad():
        m = obj.params.momentum
        for pk, pq in zip(ref["f_k"].parameters(), ref["f_q"].parameters(), strict=True):
            pk.mul_(m).add_(pq, alpha=1 - m)
    for mine, theirs in zip([*obj.key_backbone.parameters(), *obj.key_projector.parameters()], ref["f_k"].parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)
    for mine, theirs in zip([*obj.key_backbone.buffers()], ref["f_k"][0].buffers(), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_eval_forward_changes_no_state():
    obj = make_moco()
    state = {k: v.clone() for k, v in obj.state_dict().items()}
    obj.eval()
    with torch.no_grad():
        out = obj(batch(0, 4, (8, 8)))
    assert set(out.logs) == {"z_std", "pos_sim", "neg_sim"} and all(isinstance(v, float) for v in out.logs.values())
    obj.after_optimizer_step(0, 1)  # nothing pending: only the (no-op) momentum update
    for key, value in obj.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_batch_shuffle_is_the_identity_in_one_process():
    x = torch.arange(5.0)[:, None]
    shuffled, perm = batch_shuffle(x)
    torch.testing.assert_close(shuffled, x)
    torch.testing.assert_close(batch_unshuffle(shuffled, perm), x)


def test_structure_and_defaults():
    p = MoCoV2Params()
    assert (p.queue_size, p.momentum, p.temperature, p.out_dim, p.hidden_dim, p.shuffle_bn) == (65536, 0.999, 0.2, 128, None, True)
    assert (p.view_size, p.crop_scale) == (224, (0.2, 1.0))
    c = p.color
    assert (c.jitter_p, c.brightness, c.contrast, c.saturation, c.hue, c.grayscale_p, c.blur_p, c.blur_sigma, c.flip_p) == (
        0.8, 0.4, 0.4, 0.4, 0.1, 0.2, 0.5, (0.1, 2.0), 0.5)
    obj = MoCoV2Objective(MoCoV2Params.tiny(), backbone=StubBackbone())
    lin = [m for m in obj.projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(8, 32), (32, 16)]
    assert not any(p.requires_grad for p in obj.key_backbone.parameters())
    assert obj.exported_backbone() is obj.backbone
    v2 = MoCoV2Objective(MoCoV2Params(queue_size=8, out_dim=4), backbone=StubBackbone())  # hidden = backbone width
    assert [(m.in_features, m.out_features) for m in v2.projector if isinstance(m, torch.nn.Linear)] == [(8, 8), (8, 4)]
    assert structure(unstructure(MoCoV2Params.tiny()), MoCoV2Params) == MoCoV2Params.tiny()
    with pytest.raises(ConfigError, match=r"objective\.params\.momentum: must be in"):
        structure({"momentum": 1.0}, MoCoV2Params, path="objective.params")
