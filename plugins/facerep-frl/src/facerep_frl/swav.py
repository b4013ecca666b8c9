"""SwAV as pretrained on faces by Bulat et al. (ECCV 2022).

SwAV: Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, arXiv 2006.09882.
Faces: Bulat, Cheng, Yang, Garbett, Sanchez, Tzimiropoulos, "Pre-training strategies and datasets
for facial representation learning", ECCV 2022, arXiv 2103.16554 (ResNet-50, 2x224 + 6x96 crops,
K = 3000, eps = 0.05, tau = 0.1, prototypes frozen for 313 iterations, LARS lr 4.8).

Every crop ``x_t`` of an image gives ``z_t = f(x_t) / ||f(x_t)||`` (backbone + projector) and its
scores ``z_t^T c_k`` against ``K`` unit-norm prototypes ``c_k`` (the rows of
``self.prototypes.weight``). The codes ``q_s`` of the assignment crops are Sinkhorn-Knopp solutions
over the global batch (:mod:`facerep_frl.sinkhorn`, no gradient), and every other crop must predict
them (the "swapped" prediction, SwAV eq. 1-2, with multi-crop, Sec. 3.2)::

    l(z_t, q_s) = - sum_k q_s^(k) log p_t^(k),    p_t^(k) = exp(z_t^T c_k / tau) / sum_k' exp(z_t^T c_k' / tau)

State: the prototypes, and an optional queue of past embeddings of the assignment crops that
only enlarges the set Sinkhorn-Knopp balances (SwAV's remedy for small batches). ``forward``
changes no state besides batch-norm statistics and the prototype renormalisation; the queue is
updated in :meth:`SwAVObjective.after_optimizer_step` with the embeddings of the last training
forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from facerep import dist
from facerep.backbones import pooled_by_size
from facerep.data.augment import ColorAugment
from facerep.types import LossOutput
from facerep_frl._validate import non_negative, positive, scale_range
from facerep_frl.heads import projection_mlp
from facerep_frl.sinkhorn import sinkhorn_knopp
from facerep_frl.views import MultiCropViews

__all__ = ["SwAVColor", "SwAVObjective", "SwAVParams", "swav_loss"]


@attrs.frozen
class SwAVColor(ColorAugment):
    """:class:`~facerep.data.augment.ColorAugment` with SwAV's defaults: colour distortion of
    strength s = 1 (jitter 0.8/0.8/0.8/0.2 with p 0.8, grey p 0.2), Gaussian blur sigma U[0.1, 2]
    with p 0.5, flip p 0.5, as kept by Bulat et al. A config that sets some fields keeps these
    defaults for the others."""

    jitter_p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    flip_p: float = 0.5


@attrs.frozen
class SwAVParams:
    """Defaults are Bulat et al.'s (= SwAV's ImageNet 400-epoch recipe).

    Attributes:
        n_prototypes: K.
        out_dim: dimension of ``z`` (and of the prototypes).
        hidden_dim: projector hidden width (Linear-BN-ReLU-Linear); 0 for a linear projector.
        out_bn: end the projector with a BatchNorm without affine (MoCo v3's head), centring each
            batch's ``f(x_t)`` before the L2 normalisation. Off in SwAV; the CPU recipe uses it: a
            random-init ResNet's embeddings are nearly parallel, and with it they start spread
            (``z_std`` 0.084 with it, 0.039-0.053 without, in the 300-step pilots of docs/notes/lab-notebook.md,
            "SwAV at CPU scale"; fixed prototypes are the other half of that recipe).
        eps: Sinkhorn-Knopp entropy weight.
        sinkhorn_iters: Sinkhorn-Knopp iterations.
        temperature: tau of the softmax over prototype scores.
        freeze_prototypes_steps: the prototypes get no update for this many first steps.
        assignment_crops: crops whose codes are predicted (the two global crops).
        queue_length: embeddings of past batches added to Sinkhorn-Knopp (0: no queue); a multiple
            of the global batch. Bulat et al. ship 0.
        queue_start_step: first step whose embeddings enter the queue; the queue is used once full.
        global_crops, global_size, global_scale: the high-resolution crops (count, px, area range).
        local_crops, local_size, local_scale: the low-resolution crops.
        color: per-crop colour distortion, grey, blur and flip.
    """

    n_prototypes: int = attrs.field(default=3000, validator=positive)
    out_dim: int = attrs.field(default=128, validator=positive)
    hidden_dim: int = attrs.field(default=2048, validator=non_negative)
    out_bn: bool = False
    eps: float = attrs.field(default=0.05, validator=positive)
    sinkhorn_iters: int = attrs.field(default=3, validator=non_negative)
    temperature: float = attrs.field(default=0.1, validator=positive)
    freeze_prototypes_steps: int = attrs.field(default=313, validator=non_negative)
    assignment_crops: tuple[int, ...] = (0, 1)
    queue_length: int = attrs.field(default=0, validator=non_negative)
    queue_start_step: int = attrs.field(default=0, validator=non_negative)
    global_crops: int = attrs.field(default=2, validator=positive)
    global_size: int = attrs.field(default=224, validator=positive)
    global_scale: tuple[float, float] = attrs.field(default=(0.14, 1.0), validator=scale_range)
    local_crops: int = attrs.field(default=6, validator=non_negative)
    local_size: int = attrs.field(default=96, validator=positive)
    local_scale: tuple[float, float] = attrs.field(default=(0.05, 0.14), validator=scale_range)
    color: SwAVColor = SwAVColor()

    def __attrs_post_init__(self) -> None:
        n_crops = self.global_crops + self.local_crops
        if n_crops < 2:
            raise ValueError(f"SwAV needs at least 2 crops, got {n_crops}")
        a = self.assignment_crops
        if not a or len(set(a)) != len(a) or not all(0 <= i < n_crops for i in a):
            raise ValueError(f"assignment_crops must be distinct crop indices in [0, {n_crops}), got {a!r}")

    @classmethod
    def tiny(cls) -> SwAVParams:
        """CPU-sized parameters for tests (the facerep.testing contract suite uses this)."""
        return cls(n_prototypes=16, out_dim=16, hidden_dim=32, freeze_prototypes_steps=1, global_size=32, local_crops=2, local_size=16)


def swav_loss(scores: Sequence[torch.Tensor], codes: Mapping[int, torch.Tensor], temperature: float) -> torch.Tensor:
    """Multi-crop swapped prediction (SwAV eq. 1-2 and Sec. 3.2).

    Args:
        scores: per crop ``t``, the ``(B, K)`` scores ``z_t^T c_k``.
        codes: per assignment crop ``s``, its ``(B, K)`` codes ``q_s`` (rows sum to 1).
        temperature: tau.

    Returns:
        ``mean_s mean_{t != s} mean_batch l(z_t, q_s)``.
    """
    log_p = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]  # log p_t^(k)
    per_s = []
    for s, q_s in codes.items():
        per_s.append(torch.stack([-(q_s * log_p[t]).sum(dim=1).mean() for t in range(len(scores)) if t != s]).mean())
    return torch.stack(per_s).mean()


class SwAVObjective(nn.Module):
    """The :class:`facerep.protocols.Objective`: ``SwAVObjective(params, backbone=backbone)``."""

    def __init__(self, params: SwAVParams | None = None, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = p = params or SwAVParams()
        self.backbone = backbone
        self.projector = projection_mlp(int(backbone.embed_dim), p.hidden_dim, p.out_dim, batch_norm=True, out_bn=p.out_bn)
        self.prototypes = nn.Linear(p.out_dim, p.n_prototypes, bias=False)  # rows: c_k
        # past z of the assignment crops, newest first, identical on every process (global batches).
        self.register_buffer("queue", torch.zeros(len(p.assignment_crops), p.queue_length, p.out_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self._pending: torch.Tensor | None = None  # z of the assignment crops of the last training forward

    def view_transform(self) -> MultiCropViews:
        p = self.params
        return MultiCropViews(p.global_crops, p.global_size, p.global_scale, p.local_crops, p.local_size, p.local_scale, p.color)

    def embed(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """``z`` of all crops, ``(V * B, out_dim)`` in view order: one backbone call per run of
        same-size crops, one projector call on all of them (as SwAV's multi-crop forward)."""
        return F.normalize(self.projector(pooled_by_size(self.backbone, views)), dim=1)

    def forward(self, views: list[torch.Tensor]) -> LossOutput:
        p = self.params
        if len(views) != p.global_crops + p.local_crops:
            raise ValueError(f"SwAV expects {p.global_crops + p.local_crops} crops, got {len(views)}")
        batch = views[0].shape[0]
        with torch.no_grad():  # prototypes on the unit sphere before every forward
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        z = self.embed(views)
        scores = self.prototypes(z).split(batch)  # per crop t: z_t^T c_k, (B, K)
        queue = self._queue_slice()
        codes = {}
        for j, s in enumerate(p.assignment_crops):
            scores_s = scores[s].detach()
            if queue is not None:  # past embeddings only widen the set being equipartitioned
                scores_s = torch.cat([self.prototypes(queue[j]).detach(), scores_s])
            codes[s] = sinkhorn_knopp(scores_s, p.eps, p.sinkhorn_iters)[-batch:]
        loss = swav_loss(scores, codes, p.temperature)
        z_crops = z.detach().split(batch)
        if self.training and p.queue_length > 0:
            self._pending = torch.stack([z_crops[s] for s in p.assignment_crops])
        return LossOutput(loss, _logs(z_crops[0], codes))

    def _queue_slice(self) -> torch.Tensor | None:
        """This process's share of the (full) queue: rank r of W scores rows [r L/W, (r+1) L/W)."""
        length = self.params.queue_length
        if length == 0 or int(self.queue_filled) < length:
            return None
        world, rank = dist.world_size(), dist.rank()
        if length % world:
            raise ValueError(f"queue_length {length} is not divisible by the world size {world}")
        share = length // world
        return self.queue[:, rank * share : (rank + 1) * share]

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Add ``z`` (``(n_assign, B_local, d)``) of every process to the front of the queue."""
        z = dist.all_gather(z.transpose(0, 1).contiguous()).transpose(0, 1)  # (n_assign, B_global, d), rank order
        n, length = z.shape[1], self.params.queue_length
        if length % n:
            raise ValueError(f"queue_length {length} must be a multiple of the global batch {n}")
        self.queue[:, n:] = self.queue[:, :-n].clone()
        self.queue[:, :n] = z
        self.queue_filled.fill_(min(int(self.queue_filled) + n, length))

    def before_optimizer_step(self, step: int) -> None:
        if step < self.params.freeze_prototypes_steps:  # SwAV: no prototype update early on
            for w in self.prototypes.parameters():
                w.grad = None

    def after_micro_batch(self, step: int, micro: int, n_micro: int) -> None:
        """SwAV's forward fills the queue: each micro-batch's embeddings join it as they are made."""
        self.after_optimizer_step(step, 0)

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and step >= self.params.queue_start_step:
            self.enqueue(pending)

    def exported_backbone(self) -> nn.Module:
        return self.backbone


@torch.no_grad()
def _logs(z: torch.Tensor, codes: Mapping[int, torch.Tensor]) -> dict[str, float]:
    """Collapse signals: ``z_std`` (mean per-dimension std of unit ``z``: ~1/sqrt(d) when spread,
    -> 0 when collapsed), the codes' mean entropy (nats; log K = uniform) and how many prototypes
    are the arg-max of some sample's code."""
    q = torch.cat(list(codes.values()))
    entropy = -torch.special.xlogy(q, q).sum(dim=1).mean()
    z_std = z.float().std(dim=0).mean() if z.shape[0] > 1 else z.new_zeros(())
    return {
        "z_std": float(z_std),
        "codes_entropy": float(entropy),
        "prototypes_used": float(q.argmax(dim=1).unique().numel()),
    }
