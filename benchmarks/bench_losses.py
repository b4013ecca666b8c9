"""Loss kernels on fixed inputs: Sinkhorn-Knopp, the SwAV multi-crop loss, MoCo's InfoNCE with a queue.

Both sides get the same tensors; before timing, their losses (and gradients) are compared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _timing import Result, interleaved, paired, result

from facerep_frl.moco import info_nce
from facerep_frl.sinkhorn import sinkhorn_knopp
from facerep_frl.swav import swav_loss

__all__ = ["bench_infonce", "bench_sinkhorn", "bench_swav_loss"]


def _swav_scores(batch: int, n_protos: int, n_crops: int, dim: int = 128, seed: int = 0) -> list[torch.Tensor]:
    """Per crop, ``(B, K)`` scores of unit embeddings against unit prototypes (values in [-1, 1],
    as in training), leaf tensors that require grad."""
    g = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(n_protos, dim, generator=g), dim=1)
    centres = torch.randn(batch, dim, generator=g)  # crops of one image are correlated
    out = []
    for _ in range(n_crops):
        z = F.normalize(centres + 0.5 * torch.randn(batch, dim, generator=g), dim=1)
        out.append((z @ protos.T).requires_grad_(True))
    return out


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def bench_sinkhorn(*, batch: int, n_protos: int, warmup: int, reps: int) -> list[Result]:
    """Two rows from one interleaved timing: facerep's ``sinkhorn_knopp`` (plain-space scalings with a
    checked log-domain fallback, issue 8) and its log-domain path alone (the implementation before
    issue 8, kept as the fallback), each against lightly's ``sinkhorn``."""
    from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

    from facerep_frl.sinkhorn import _log_codes

    scores = _swav_scores(batch, n_protos, 1)[0].detach()
    ours, theirs = sinkhorn_knopp(scores, 0.05, 3), lightly_sinkhorn(scores, iterations=3, epsilon=0.05)
    log_domain = _log_codes(scores, 0.05, 3)
    diff, diff_log = _max_abs(ours, theirs), _max_abs(log_domain, theirs)
    for name, codes in (("sinkhorn_knopp", ours), ("log-domain path", log_domain)):
        if not torch.allclose(codes, theirs, rtol=1e-4, atol=1e-7):
            raise AssertionError(f"Sinkhorn codes differ ({name}): max |diff| {_max_abs(codes, theirs):.3g}")
    times = interleaved({"facerep": lambda: sinkhorn_knopp(scores, 0.05, 3), "log": lambda: _log_codes(scores, 0.05, 3),
                         "lightly": lambda: lightly_sinkhorn(scores, iterations=3, epsilon=0.05)}, warmup=warmup, reps=reps)
    name = f"Sinkhorn-Knopp B={batch} K={n_protos}"
    note = (f"{name}: facerep sinkhorn_knopp (exp2 once after a global max-subtraction, u/v scalings by matrix-vector products, "
            "log-domain fallback when float32 would under/overflow) vs lightly sinkhorn (exp once, plain sums), eps 0.05, 3 iters, fp32")
    note_log = (f"{name}, log-domain path: facerep's log-domain Sinkhorn (logsumexp per normalisation; the implementation before "
                "issue 8, now the fallback) vs lightly sinkhorn, same timing run as the row above, eps 0.05, 3 iters, fp32")
    return [
        result(name, "ms/call", (times["facerep"], times["lightly"]), check=f"codes max abs diff {diff:.1e}", note=note),
        result(f"{name}, log-domain path (before)", "ms/call", (times["log"], times["lightly"]), check=f"codes max abs diff {diff_log:.1e}",
               note=note_log),
    ]


def bench_swav_loss(*, batch: int, n_protos: int, n_high: int, n_low: int, warmup: int, reps: int) -> Result:
    from lightly.loss import SwaVLoss

    scores = _swav_scores(batch, n_protos, n_high + n_low)
    lightly_loss = SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)

    def ours() -> torch.Tensor:
        codes = {s: sinkhorn_knopp(scores[s].detach(), 0.05, 3) for s in range(n_high)}
        loss = swav_loss(scores, codes, 0.1)
        loss.backward()
        return loss

    def theirs() -> torch.Tensor:
        loss = lightly_loss(scores[:n_high], scores[n_high:])
        loss.backward()
        return loss

    def grads(fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for s in scores:
            s.grad = None
        loss = fn().detach().reshape(())
        return loss, [s.grad.clone() for s in scores]

    loss_a, grad_a = grads(ours)
    loss_b, grad_b = grads(theirs)
    dl = abs(float(loss_a - loss_b))
    dg = max(_max_abs(a, b) for a, b in zip(grad_a, grad_b, strict=True))
    if not torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6) or not all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-9) for a, b in zip(grad_a, grad_b, strict=True)
    ):
        raise AssertionError(f"SwAV losses differ: loss {float(loss_a)} vs {float(loss_b)}, grad max |diff| {dg:.3g}")

    def zero_grads() -> None:
        for s in scores:
            s.grad = None

    times = paired(lambda: (zero_grads(), ours()), lambda: (zero_grads(), theirs()), warmup=warmup, reps=reps)
    name = f"Sinkhorn + SwAV loss fwd+bwd, {n_high}+{n_low} crops, B={batch} K={n_protos}"
    note = (f"{name}: facerep sinkhorn_knopp + swav_loss vs lightly SwaVLoss, codes for the {n_high} global crops, "
            "tau 0.1, eps 0.05, 3 iters, fp32")
    return result(name, "ms/step", times, check=f"loss abs diff {dl:.1e}, grad max abs diff {dg:.1e}", note=note)


class _Queue:
    """facerep's queue handling in ``MoCoV2Objective``: a ``(d, K)`` ring buffer, cloned for the
    logits, keys written over the oldest columns after the step (single process)."""

    def __init__(self, queue: torch.Tensor) -> None:
        self.queue = queue.clone()
        self.ptr = 0

    def step(self, p_q: torch.Tensor, p_k: torch.Tensor, temperature: float) -> torch.Tensor:
        q = F.normalize(p_q, dim=1)
        with torch.no_grad():
            k = F.normalize(p_k, dim=1)
        loss = info_nce(q, k, self.queue.clone().detach(), temperature)
        loss.backward()
        n = len(k)
        self.queue[:, self.ptr : self.ptr + n] = k.T
        self.ptr = (self.ptr + n) % self.queue.shape[1]
        return loss


def bench_infonce(*, batch: int, queue_size: int, dim: int, warmup: int, reps: int) -> Result:
    from lightly.loss import NTXentLoss

    temperature = 0.2
    g = torch.Generator().manual_seed(0)
    p_q = torch.randn(batch, dim, generator=g).requires_grad_(True)  # projector outputs (not yet unit)
    p_k = p_q.detach() + 0.3 * torch.randn(batch, dim, generator=g)  # key encoder outputs (no grad in MoCo)
    queue = F.normalize(torch.randn(dim, queue_size, generator=g), dim=0)

    ours = _Queue(queue)
    theirs = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, dim))
    theirs.memory_bank.bank.copy_(queue.T)  # lightly keeps the bank as (K, d)
    theirs.memory_bank.bank_ptr.zero_()

    def lightly_step() -> torch.Tensor:
        loss = theirs(p_q, p_k)  # normalises both, uses the bank, then enqueues p_k (out0 requires grad)
        loss.backward()
        return loss

    # two steps each: the second one sees the queue after the first enqueue
    checks = []
    for _ in range(2):
        p_q.grad = None
        la = ours.step(p_q, p_k, temperature).detach()
        ga = p_q.grad.clone()
        p_q.grad = None
        lb = lightly_step().detach()
        gb = p_q.grad.clone()
        if not torch.allclose(la, lb, rtol=1e-5, atol=1e-6) or not torch.allclose(ga, gb, rtol=1e-4, atol=1e-8):
            raise AssertionError(f"InfoNCE differs: loss {float(la)} vs {float(lb)}, grad max |diff| {_max_abs(ga, gb):.3g}")
        checks.append((abs(float(la - lb)), _max_abs(ga, gb)))
    if not torch.allclose(ours.queue, theirs.memory_bank.bank.T, atol=1e-6):
        raise AssertionError("queues differ after two steps")

    def zero() -> None:
        p_q.grad = None

    times = paired(lambda: (zero(), ours.step(p_q, p_k, temperature)), lambda: (zero(), lightly_step()), warmup=warmup, reps=reps)
    name = f"MoCo InfoNCE + queue fwd+bwd, B={batch} K={queue_size} d={dim}"
    note = (f"{name}: facerep F.normalize + info_nce + ring-buffer enqueue (as MoCoV2Objective) vs lightly NTXentLoss("
            f"memory_bank_size=({queue_size}, {dim})), T {temperature}, fp32. Same maths in one process; lightly's bank "
            "is per process and drops the overflow of a batch that does not fit, facerep's is global (all-gathered keys, "
            "K a multiple of the global batch)")
    dl = max(c[0] for c in checks)
    dg = max(c[1] for c in checks)
    return result(name, "ms/step", times, check=f"2 steps: loss abs diff {dl:.1e}, grad max abs diff {dg:.1e}, queues equal", note=note)
