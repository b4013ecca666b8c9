"""MoCo-v2 as pretrained on faces by Bulat et al. (ECCV 2022).

MoCo: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020 (arXiv 1911.05722). MoCo-v2: Chen, Fan, Girshick, He, "Improved Baselines with
Momentum Contrastive Learning", arXiv 2003.04297 (MLP head, T = 0.2, "aug-plus" with blur).
Faces: Bulat et al., "Pre-training strategies and datasets for facial representation learning",
ECCV 2022, arXiv 2103.16554.

A query ``q = f_q(x_q)`` and its key ``k+ = f_k(x_k)`` (two views of one image, unit vectors) are
contrasted with a queue of ``K`` keys of past batches (He et al. eq. 1)::

    L_q = -log exp(q.k+ / T) / (exp(q.k+ / T) + sum_{k- in queue} exp(q.k- / T))

and the key encoder follows the query encoder by momentum, without gradient (He et al. eq. 2)::

    theta_k <- m theta_k + (1 - m) theta_q

Order of the updates (exactly MoCo's). The reference loop does, per iteration: ``q``; momentum
update; ``k``; loss with the current queue; enqueue ``k``; backward; optimizer step. Here the
momentum update and the enqueue run in :meth:`MoCoV2Objective.after_optimizer_step`, i.e. right
after the optimizer step instead of at the start of the next forward. The key encoder that computes
``k`` at step ``t`` is the same (``theta_k`` updated with the ``theta_q`` of every step before
``t``; at step 0 the reference update is a no-op, as ``theta_k = theta_q`` at initialisation), and
the logits see the queue before ``k`` is added, as in the reference. ``forward`` thus changes no
state besides batch-norm statistics, and an evaluation forward changes nothing.
"""

from __future__ import annotations

import copy

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from facerep import dist
from facerep.data.augment import ColorAugment
from facerep.engine.ema import momentum_update
from facerep.types import LossOutput
from facerep_frl._validate import non_negative, positive, scale_range, unit_interval
from facerep_frl.heads import projection_mlp
from facerep_frl.views import TwoViews

__all__ = ["MoCoV2Objective", "MoCoV2Params", "batch_shuffle", "batch_unshuffle", "info_nce"]

#: MoCo-v2 "aug-plus" colour: jitter 0.4/0.4/0.4/0.1 with p 0.8, grey p 0.2, blur sigma U[0.1, 2]
#: with p 0.5, flip p 0.5.
AUG_PLUS_COLOR = ColorAugment(
    jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, grayscale_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0), solarize_p=0.0,
    flip_p=0.5,
)


@attrs.frozen
class MoCoV2Params:
    """Defaults are MoCo-v2's.

    Attributes:
        queue_size: K, keys in the queue; a multiple of the global batch.
        momentum: m of the key encoder.
        temperature: T. MoCo-v2 uses 0.2; Bulat et al.'s code defaults to MoCo-v1's 0.07.
        out_dim: dimension of ``q`` and ``k``.
        hidden_dim: projector hidden width (Linear-ReLU-Linear); None: the backbone's width
            (MoCo-v2); 0: a linear projector (MoCo-v1).
        shuffle_bn: shuffle the key batch across processes (MoCo's shuffling BN); no effect in one process.
        view_size, crop_scale: RandomResizedCrop of both views.
        color: colour jitter, grey, blur and flip of both views ("aug-plus").
    """

    queue_size: int = attrs.field(default=65536, validator=positive)
    momentum: float = attrs.field(default=0.999, validator=unit_interval)
    temperature: float = attrs.field(default=0.2, validator=positive)
    out_dim: int = attrs.field(default=128, validator=positive)
    hidden_dim: int | None = attrs.field(default=None, validator=attrs.validators.optional(non_negative))
    shuffle_bn: bool = True
    view_size: int = attrs.field(default=224, validator=positive)
    crop_scale: tuple[float, float] = attrs.field(default=(0.2, 1.0), validator=scale_range)
    color: ColorAugment = AUG_PLUS_COLOR

    @classmethod
    def tiny(cls) -> MoCoV2Params:
        """CPU-sized parameters for tests (the facerep.testing contract suite uses this)."""
        return cls(queue_size=64, momentum=0.99, out_dim=16, hidden_dim=32, view_size=32)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. eq. 1), mean over the batch.

    Args:
        q: ``(B, d)`` unit queries.
        k: ``(B, d)`` unit positive keys, ``k[i]`` for ``q[i]``.
        queue: ``(d, K)`` unit negative keys.
        temperature: T.
    """
    l_pos = (q * k).sum(dim=1, keepdim=True)  # q.k+, (B, 1)
    l_neg = q @ queue  # q.k-, (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1).float() / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))  # the positive is class 0


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffling BN, first half (He et al. Sec. 3.3): this process's slice of the global
    batch permuted by rank 0's random permutation, and that permutation (the same on every process).

    The key encoder's batch-norm statistics are then taken over a random subset of the global
    batch rather than over the very samples whose queries are on this process, so that they cannot
    leak which key is the positive. The identity in one process.
    """
    if dist.world_size() == 1:
        return x, torch.arange(len(x), device=x.device)
    x_all = dist.all_gather(x)
    n, b, r = len(x_all), len(x), dist.rank()
    perm = dist.all_gather(torch.randperm(n, device=x.device))[:n]  # rank 0's permutation on every rank
    return x_all[perm[r * b : (r + 1) * b]], perm


def _inverse(perm: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm), device=perm.device)
    return inverse


@torch.no_grad()
def batch_unshuffle(y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Second half: the outputs of this process's own samples, in their original order."""
    if dist.world_size() == 1:
        return y[_inverse(perm)]
    y_all = dist.all_gather(y)  # y_all[j] belongs to global sample perm[j]
    b, r = len(y), dist.rank()
    return y_all[_inverse(perm)[r * b : (r + 1) * b]]


class MoCoV2Objective(nn.Module):
    """The :class:`facerep.protocols.Objective`: ``MoCoV2Objective(params, backbone=backbone)``."""

    def __init__(self, params: MoCoV2Params | None = None, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = p = params or MoCoV2Params()
        self.backbone = backbone  # f_q (with the projector)
        width = int(backbone.embed_dim)
        self.projector = projection_mlp(width, width if p.hidden_dim is None else p.hidden_dim, p.out_dim, batch_norm=False)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)  # f_k, theta_k = theta_q at start
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(p.out_dim, p.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next column to overwrite (the oldest)
        self._pending: torch.Tensor | None = None  # keys of the last training forward

    def view_transform(self) -> TwoViews:
        return TwoViews(self.params.view_size, self.params.crop_scale, self.params.color)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x).pooled), dim=1)

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        if self.params.shuffle_bn and dist.world_size() > 1:
            x, perm = batch_shuffle(x)
            return batch_unshuffle(self._key_encoder(x), perm)
        # One process: shuffling BN is impossible (a single BN batch holds every key); the key
        # statistics are those of the key batch, as in single-GPU MoCo.
        return self._key_encoder(x)

    def _key_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_backbone(x).pooled), dim=1)

    def forward(self, views: list[torch.Tensor]) -> LossOutput:
        if len(views) != 2:
            raise ValueError(f"MoCo-v2 trains on 2 views, got {len(views)}")
        q = self.query(views[0])
        k = self.key(views[1])
        loss = info_nce(q, k, self.queue.clone().detach(), self.params.temperature)
        if self.training:
            self._pending = k
        with torch.no_grad():
            logs = {
                "z_std": float(q.float().std(dim=0).mean()) if len(q) > 1 else 0.0,  # ~1/sqrt(d) spread, -> 0 collapsed
                "pos_sim": float((q * k).sum(dim=1).mean()),
                "neg_sim": float(q.mean(dim=0) @ self.queue.mean(dim=1)),  # mean of q.k- over batch and queue
            }
        return LossOutput(loss, logs)

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor) -> None:
        """Write the keys of every process (rank order) over the oldest columns of the ring buffer."""
        k = dist.all_gather(k)
        n, size = len(k), self.params.queue_size
        if size % n:
            raise ValueError(f"queue_size {size} must be a multiple of the global batch {n}")
        ptr = int(self.queue_ptr)
        self.queue[:, ptr : ptr + n] = k.T.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        m = self.params.momentum  # theta_k <- m theta_k + (1 - m) theta_q (buffers: the key encoder's own BN statistics)
        momentum_update(self.key_backbone, self.backbone, m)
        momentum_update(self.key_projector, self.projector, m)

    @torch.no_grad()
    def after_micro_batch(self, step: int, micro: int, n_micro: int) -> None:
        """MoCo's forward enqueues its keys and, at its start, moves the key encoder: with ``n``
        micro-batches per step the queue takes every micro-batch's keys and the key encoder moves
        ``n`` times per step (here between micro-batches and after the step)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.enqueue(pending)
        if micro < n_micro - 1:
            self._momentum_update()

    def before_optimizer_step(self, step: int) -> None:
        pass

    @torch.no_grad()
    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        self._momentum_update()
        pending, self._pending = self._pending, None  # a caller that skips after_micro_batch
        if pending is not None:
            self.enqueue(pending)

    def exported_backbone(self) -> nn.Module:
        return self.backbone
