"""Sinkhorn-Knopp codes for SwAV, over the global batch of every process.

SwAV (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", NeurIPS 2020, arXiv 2006.09882, Sec. 3.1 "Computing codes online") assigns the
``B`` embeddings ``Z`` of a batch to ``K`` prototypes ``C`` with an *equipartition* constraint: the
codes ``Q`` (``K x B``) maximise ``Tr(Q^T C^T Z) + eps * H(Q)`` over the transportation polytope::

    { Q in R_+^{K x B} :  Q 1_B = 1_K / K,   Q^T 1_K = 1_B / B }

whose solution is ``Q* = Diag(u) exp(C^T Z / eps) Diag(v)``, with ``u, v`` found by a few
Sinkhorn-Knopp iterations that alternately rescale the rows (each prototype gets mass ``1/K``) and
the columns (each sample gets mass ``1/B``). The codes used as targets are the columns of ``Q``
rescaled to sum to one.

In Bulat et al. (ECCV 2022, arXiv 2103.16554; as in SwAV's code) the batch is the *global* batch:
row sums are all-reduced over the processes and ``B = world_size * B_local``, so ``W`` processes
with ``B_local`` samples each produce the codes one process would with the whole batch (up to
floating-point summation order).

Numerics: the iterates are carried as ``log Q``. Each rescaling is then a subtraction of a
log-sum-exp, i.e. the max-subtraction trick applied at every normalisation instead of once before
``exp``; no entry can overflow to ``inf`` or underflow to a ``0/0``, whatever ``S / eps``. The
iterates are otherwise those of the reference algorithm: its first step (divide ``Q`` by its global
sum) is a scalar that the first row normalisation cancels, so it is not needed here. The
per-prototype maxima are combined with an all-gather (``facerep.dist`` has no max-reduction).
"""

from __future__ import annotations

import math

import torch

from facerep import dist

__all__ = ["sinkhorn_knopp", "sinkhorn_plan"]


def _global_logsumexp_over_batch(log_q: torch.Tensor) -> torch.Tensor:
    """``log sum_b exp(log_q[k, b])`` over the global batch: ``(K, B_local) -> (K, 1)``."""
    m = dist.all_gather(log_q.amax(dim=1)[None]).amax(dim=0)[:, None]  # global max per prototype
    return m + dist.all_reduce_sum(torch.exp(log_q - m).sum(dim=1, keepdim=True)).log()


@torch.no_grad()
def _log_plan(scores: torch.Tensor, eps: float, n_iters: int) -> torch.Tensor:
    """``log Q`` (``K x B_local``) after ``n_iters`` Sinkhorn-Knopp iterations."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K), got shape {tuple(scores.shape)}")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    n_batch = scores.shape[0] * dist.world_size()  # B: the global batch
    n_protos = scores.shape[1]  # K
    log_q = scores.detach().float().T.contiguous() / eps  # log of Q = exp(C^T Z / eps), K x B_local
    for _ in range(n_iters):
        # rows: Q <- Diag(1 / (K Q 1_B)) Q, every prototype gets mass 1/K (sums over all processes)
        log_q = log_q - _global_logsumexp_over_batch(log_q) - math.log(n_protos)
        # columns: Q <- Q Diag(1 / (B Q^T 1_K)), every sample gets mass 1/B (B global)
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(n_batch)
    return log_q


def sinkhorn_plan(scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """The transport plan ``Q^T`` before the final column normalisation, ``(B_local, K)``.

    Over the global batch its entries sum to one, each sample's row to ``1/B`` and each
    prototype's column to ``1/K`` (exactly after the last column step; approximately, up to
    Sinkhorn's convergence, for the prototypes). Exposed for tests and diagnostics.
    """
    return _log_plan(scores, eps, n_iters).exp().T


def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """SwAV codes ``q`` for the local rows of the global batch, without gradient.

    Args:
        scores: ``(B_local, K)`` prototype scores ``C^T z`` of this process's samples.
        eps: entropy weight (SwAV and Bulat et al.: 0.05).
        n_iters: Sinkhorn-Knopp iterations (3).

    Returns:
        ``(B_local, K)`` float32 codes, each row a distribution over the prototypes (sums to 1):
        the columns of ``Q`` divided by their sums.
    """
    return torch.softmax(_log_plan(scores, eps, n_iters), dim=0).T
