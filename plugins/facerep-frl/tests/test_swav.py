"""SwAV: the loss by hand, the objective's wiring, prototype freezing and normalisation, the queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _frl_helpers import StubBackbone, batch, make_swav

from facerep.config import structure, unstructure
from facerep.errors import ConfigError
from facerep_frl.sinkhorn import sinkhorn_knopp
from facerep_frl.swav import SwAVObjective, SwAVParams, swav_loss

# ---------------------------------------------------------------------------------------------
# the loss, by hand
# ---------------------------------------------------------------------------------------------


def test_swav_loss_matches_a_hand_computed_two_sample_example():
    # d = 2, K = 2 prototypes c_1 = (1, 0), c_2 = (0, 1); tau = 0.5; two crops, both assignment crops.
    # sample 1: z_0 = (1, 0), z_1 = (0, 1); sample 2: z_0 = (0.6, 0.8), z_1 = (0.8, 0.6)
    # scores z^T c_k are then the coordinates of z.
    tau = 0.5
    scores0 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scores1 = torch.tensor([[0.0, 1.0], [0.8, 0.6]])
    q0 = torch.tensor([[0.75, 0.25], [0.5, 0.5]])  # codes of crop 0
    q1 = torch.tensor([[0.25, 0.75], [0.1, 0.9]])  # codes of crop 1

    def log_p(a: float, b: float) -> tuple[float, float]:  # log softmax((a, b) / tau), by formula
        norm = math.log(math.exp(a / tau) + math.exp(b / tau))
        return a / tau - norm, b / tau - norm

    # crop 1 predicts q0, crop 0 predicts q1; l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k), mean over the batch
    p1_s1, p1_s2 = log_p(0.0, 1.0), log_p(0.8, 0.6)
    p0_s1, p0_s2 = log_p(1.0, 0.0), log_p(0.6, 0.8)
    l_from_0 = -((0.75 * p1_s1[0] + 0.25 * p1_s1[1]) + (0.5 * p1_s2[0] + 0.5 * p1_s2[1])) / 2
    l_from_1 = -((0.25 * p0_s1[0] + 0.75 * p0_s1[1]) + (0.1 * p0_s2[0] + 0.9 * p0_s2[1])) / 2
    expected = (l_from_0 + l_from_1) / 2
    # the same by hand: log(1 + e^2) = 2.126928, log(e^1.6 + e^1.2) = 2.113010, so
    # l_from_0 = (0.75 * 2.126928 + 0.25 * 0.126928 + 0.5 * 0.513010 + 0.5 * 0.913010) / 2 = 1.169969
    # l_from_1 = (0.25 * 0.126928 + 0.75 * 2.126928 + 0.1 * 0.913010 + 0.9 * 0.513010) / 2 = 1.089969
    assert (l_from_0, l_from_1, expected) == pytest.approx((1.169969, 1.089969, 1.129969), abs=1e-5)

    got = swav_loss([scores0, scores1], {0: q0, 1: q1}, temperature=tau)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    only_0 = swav_loss([scores0, scores1], {0: q0}, temperature=tau)  # one assignment crop
    assert only_0.item() == pytest.approx(l_from_0, abs=1e-6)


def test_swav_loss_averages_over_the_other_crops():
    # three crops, assignment crop 0: loss = mean of the losses of crops 1 and 2 against q_0
    g = torch.Generator().manual_seed(0)
    scores = [torch.randn(5, 4, generator=g) for _ in range(3)]
    q = torch.softmax(torch.randn(5, 4, generator=g), dim=1)
    each = [-(q * F.log_softmax(scores[t] / 0.1, dim=1)).sum(1).mean() for t in (1, 2)]
    assert swav_loss(scores, {0: q}, 0.1).item() == pytest.approx(((each[0] + each[1]) / 2).item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------


def test_forward_is_swav_loss_of_sinkhorn_codes_with_one_backbone_call_per_crop_size():
    obj = make_swav(queue_length=0, hidden_dim=16)  # Linear-BN-ReLU-Linear projector
    obj.eval()  # BN on running statistics: every sample on its own, so crops can be embedded one by one
    calls = []
    obj.backbone.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape))
    views = batch(0, 5, (8, 8, 4))
    with torch.no_grad():
        out = obj(views)
    assert calls == [(10, 3, 8, 8), (5, 3, 4, 4)]  # the two global crops together, then the local crop
    with torch.no_grad():
        z = [F.normalize(obj.projector(obj.backbone(v).pooled), dim=1) for v in views]
        c = F.normalize(obj.prototypes.weight, dim=1)
        scores = [zv @ c.T for zv in z]
        codes = {s: sinkhorn_knopp(scores[s], 0.05, 3) for s in (0, 1)}
        expected = swav_loss(scores, codes, 0.1)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out.logs) >= {"z_std", "codes_entropy", "prototypes_used"}
    assert 0 < out.logs["z_std"] < 1 and 0 <= out.logs["codes_entropy"] <= math.log(6) + 1e-6
    assert 1 <= out.logs["prototypes_used"] <= 6


def test_out_bn_centres_the_batch_of_all_crops_before_the_normalisation():
    assert not any(isinstance(m, torch.nn.BatchNorm1d) and not m.affine for m in make_swav(hidden_dim=16).projector)  # SwAV's head
    obj = make_swav(queue_length=0, hidden_dim=16, out_bn=True)
    last = obj.projector[-1]
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    seen = []
    last.register_forward_hook(lambda m, inp, out: seen.append(out.detach()))
    obj.train()
    obj(batch(0, 5, (8, 8, 4)))
    (out,) = seen
    assert out.shape[0] == 15, "one projector call on the 3 crops of 5 images"
    torch.testing.assert_close(out.mean(0), torch.zeros(out.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(out.shape[1]), atol=1e-3, rtol=0)


def test_prototype_rows_are_normalised_before_every_forward():
    obj = make_swav(queue_length=0)
    with torch.no_grad():
        obj.prototypes.weight.mul_(torch.arange(1, 7, dtype=torch.float32)[:, None])  # rows of norm != 1
    obj(batch(0, 4, (8, 8, 4)))
    torch.testing.assert_close(obj.prototypes.weight.norm(dim=1), torch.ones(6))


def test_prototypes_get_no_gradient_during_the_first_steps():
    obj = make_swav(queue_length=0, freeze_prototypes_steps=3)
    for step, frozen in [(0, True), (2, True), (3, False), (10, False)]:
        obj.zero_grad(set_to_none=True)
        obj(batch(step, 4, (8, 8, 4))).loss.backward()
        obj.before_optimizer_step(step)
        assert (obj.prototypes.weight.grad is None) == frozen, step
        assert obj.backbone.conv.weight.grad is not None and obj.projector[0].weight.grad is not None


def test_queue_fills_from_the_start_step_newest_first_and_is_used_once_full():
    obj = make_swav(queue_length=8, queue_start_step=1)  # global batch 4: the queue holds 2 batches
    assert obj.queue.shape == (2, 8, 4) and int(obj.queue_filled) == 0
    seen = []
    for step in range(4):
        views = batch(step, 4, (8, 8, 4))
        obj(views)
        seen.append(torch.stack([obj._pending[0], obj._pending[1]]))  # z of crops 0 and 1 of this batch
        obj.after_optimizer_step(step, 4)
        assert int(obj.queue_filled) == min(4 * step, 8)  # step 0 is before queue_start_step
    torch.testing.assert_close(obj.queue[:, :4], seen[3])  # newest first
    torch.testing.assert_close(obj.queue[:, 4:], seen[2])
    # the queue changes the codes (Sinkhorn balances batch + queue) only once it is full
    fresh = make_swav(queue_length=8)
    fresh.load_state_dict(obj.state_dict())
    empty = make_swav(queue_length=8)
    empty.load_state_dict({**obj.state_dict(), "queue_filled": torch.tensor(4)})
    fresh.eval(), empty.eval()
    views = batch(9, 4, (8, 8, 4))
    with torch.no_grad():
        no_queue = make_swav(queue_length=0)
        no_queue.load_state_dict({k: v for k, v in obj.state_dict().items() if not k.startswith("queue")}, strict=False)
        no_queue.eval()
        assert fresh(views).loss.item() != pytest.approx(no_queue(views).loss.item(), rel=1e-6)
        assert empty(views).loss.item() == pytest.approx(no_queue(views).loss.item(), rel=1e-6)


def test_eval_forward_changes_no_queue_state():
    obj = make_swav(queue_length=8, queue_start_step=0)
    obj.eval()
    obj(batch(0, 4, (8, 8, 4)))
    obj.after_optimizer_step(0, 1)
    assert int(obj.queue_filled) == 0 and obj.queue.abs().sum() == 0


def test_queue_length_must_be_a_multiple_of_the_global_batch():
    obj = make_swav(queue_length=6, queue_start_step=0)
    obj(batch(0, 4, (8, 8, 4)))
    with pytest.raises(ValueError, match="multiple of the global batch 4"):
        obj.after_optimizer_step(0, 1)


def test_exported_backbone_is_the_online_backbone():
    bb = StubBackbone()
    obj = SwAVObjective(SwAVParams.tiny(), backbone=bb)
    assert obj.exported_backbone() is bb is obj.backbone


# ---------------------------------------------------------------------------------------------
# params
# ---------------------------------------------------------------------------------------------


def test_default_params_are_bulat_et_al():
    p = SwAVParams()
    assert (p.n_prototypes, p.out_dim, p.hidden_dim, p.eps, p.sinkhorn_iters, p.temperature) == (3000, 128, 2048, 0.05, 3, 0.1)
    assert (p.freeze_prototypes_steps, p.assignment_crops, p.queue_length) == (313, (0, 1), 0)
    assert (p.global_crops, p.global_size, p.global_scale) == (2, 224, (0.14, 1.0))
    assert (p.local_crops, p.local_size, p.local_scale) == (6, 96, (0.05, 0.14))
    c = p.color
    assert (c.brightness, c.contrast, c.saturation, c.hue, c.jitter_p) == (0.8, 0.8, 0.8, 0.2, 0.8)
    assert (c.grayscale_p, c.blur_p, c.blur_sigma, c.solarize_p, c.flip_p) == (0.2, 0.5, (0.1, 2.0), 0.0, 0.5)


def test_params_round_trip_and_validation_errors_name_the_field():
    p = SwAVParams.tiny()
    assert structure(unstructure(p), SwAVParams) == p
    got = structure({"n_prototypes": 300, "color": {"brightness": 0.4}, "assignment_crops": [0]}, SwAVParams)
    assert got.n_prototypes == 300 and got.color.brightness == 0.4 and got.color.hue == 0.2 and got.assignment_crops == (0,)
    with pytest.raises(ConfigError, match=r"objective\.params\.n_protoypes: unknown key"):
        structure({"n_protoypes": 3}, SwAVParams, path="objective.params")
    with pytest.raises(ConfigError, match=r"objective\.params\.eps: must be positive"):
        structure({"eps": 0}, SwAVParams, path="objective.params")
    with pytest.raises(ConfigError, match="assignment_crops"):
        structure({"assignment_crops": [0, 8]}, SwAVParams, path="objective.params")
    with pytest.raises(ConfigError, match="local_scale"):
        structure({"local_scale": [0.5, 0.1]}, SwAVParams, path="objective.params")
