"""Self-distillation over learnable prototypes: the building blocks that DINO-style objectives share
(Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, Sec. 3.1 and
Algorithm 1; ``specs/methods.md`` §0.3). ProS's prototype-matching loss and LAFS's landmark DINO are
both built from them.

For a view ``x`` the head gives ``g(x)_k = cos(z(x), c_k)``: an MLP projection ``z`` on the unit
sphere against ``K`` learnable prototypes ``c_k`` (DINO's weight-normalised last layer with its norm
fixed to 1). With a teacher ``g_t`` and a student ``g_s``::

    P_t(x) = softmax((g_t(x) - c) / tau_t)         centring + sharpening (DINO eq. 1 and Sec. 3.1)
    L = mean over pairs (t, s), t a global view, s any other view, of  - sum_k P_t(x_t)_k log P_s(x_s)_k
    c <- m_c c + (1 - m_c) mean_batch g_t(globals)    (batch mean over all processes; DINO eq. 4)

The student's log-probabilities are ``log_softmax(g_s / tau_s)`` (DINO eq. 2). No per-sample loops:
each pair is one ``(B, K)`` product.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facerep import dist

__all__ = ["Centre", "PrototypeDistillation", "PrototypeHead", "linear_warmup", "prototype_distillation_loss", "teacher_distribution"]


class PrototypeHead(nn.Module):
    """DINO's head with its prototypes explicit: ``layers``-deep MLP (GELU, no BN) ``in_dim ->
    hidden_dim -> ... -> bottleneck_dim``, L2-normalised, then cosine similarity to
    ``n_prototypes`` learnable vectors ``c_k`` (DINO: 2048 / 256 / 65,536).

    Written out rather than ``torch.nn.utils.weight_norm``: cosine to normalised prototypes is the
    same function when the norm is fixed (DINO's ``norm_last_layer``), and the prototypes stay one
    readable ``(K, bottleneck_dim)`` tensor. ``learn_norm`` gives each prototype a learnable gain
    (DINO's ``norm_last_layer=False``). ``prototype_init``: ``trunc_normal`` (std 0.02, row norm
    ~0.32 at 256-d) or ``linear``, DINO's (and LAFS's) ``nn.Linear`` default for the weight-normed
    last layer (uniform +-1/sqrt(bottleneck_dim), row norm ~0.577; ``vision_transformer.py:284``):
    only the norm differs (the head normalises the prototypes), and with it AdamW's early angular step."""

    def __init__(self, in_dim: int, n_prototypes: int, *, hidden_dim: int = 2048, bottleneck_dim: int = 256, layers: int = 3,
                 learn_norm: bool = False, prototype_init: str = "trunc_normal") -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mlp: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            mlp.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        self.prototypes = nn.Parameter(torch.empty(n_prototypes, bottleneck_dim))
        self.gain = nn.Parameter(torch.ones(n_prototypes)) if learn_norm else None
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # DINO's init
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if prototype_init == "linear":  # nn.Linear(bottleneck_dim, K).reset_parameters() on the (K, bottleneck_dim) weight
            nn.init.kaiming_uniform_(self.prototypes, a=math.sqrt(5))
        elif prototype_init == "trunc_normal":
            nn.init.trunc_normal_(self.prototypes, std=0.02)
        else:
            raise ValueError(f"prototype_init: trunc_normal or linear, got {prototype_init!r}")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_dim)`` -> unit ``z``, ``(N, bottleneck_dim)``."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_dim)`` -> ``g``: cosines to the prototypes (times their gains), ``(N, K)``."""
        g = self.embed(x) @ F.normalize(self.prototypes, dim=-1).T
        return g * self.gain if self.gain is not None else g

    def cancel_prototype_gradients(self) -> None:
        """DINO's ``freeze_last_layer``: the prototypes do not move this step (call after backward)."""
        self.prototypes.grad = None
        if self.gain is not None:
            self.gain.grad = None


def teacher_distribution(teacher_logits: torch.Tensor, centre: torch.Tensor, temperature: float) -> torch.Tensor:
    """``P_t = softmax((g_t - c) / tau_t)``, in float32, without gradient."""
    return F.softmax((teacher_logits.detach().float() - centre) / temperature, dim=-1)


def prototype_distillation_loss(student_logits: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor],
                                student_temperature: float) -> torch.Tensor:
    """Cross-entropy ``H(P_t, P_s)`` averaged over the batch and over every pair of a teacher view
    ``i`` (the student's view ``i``, a global crop) and a different student view ``j``.

    ``student_logits``: one ``(B, K)`` per view, globals first; ``teacher_probs``: one ``(B, K)`` per
    global view (:func:`teacher_distribution`)."""
    log_p = [F.log_softmax(s.float() / student_temperature, dim=-1) for s in student_logits]
    terms = [-(pt * log_p[j]).sum(-1).mean() for i, pt in enumerate(teacher_probs) for j in range(len(log_p)) if j != i]
    if not terms:
        raise ValueError("prototype_distillation_loss: needs at least two views (a teacher view and another student view)")
    return torch.stack(terms).mean()


class Centre(nn.Module):
    """The teacher-output centre ``c`` (a buffer, so it is checkpointed). :meth:`stage` takes this
    step's teacher logits in the forward pass (the batch mean, summed over processes);
    :meth:`commit` applies ``c <- m c + (1 - m) mean`` after the optimizer step, so that every
    forward of one step sees the same ``c``."""

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("centre", torch.zeros(1, dim))
        self._pending: torch.Tensor | None = None

    @torch.no_grad()
    def stage(self, teacher_logits: torch.Tensor) -> None:
        """``teacher_logits``: ``(N, K)``, all global views of this process's batch."""
        total = dist.all_reduce_sum(teacher_logits.detach().float().sum(0, keepdim=True))
        count = dist.all_reduce_sum(torch.tensor(float(teacher_logits.shape[0]), device=teacher_logits.device))
        self._pending = total / count

    @torch.no_grad()
    def commit(self) -> None:
        if self._pending is not None:
            self.centre.mul_(self.momentum).add_(self._pending, alpha=1.0 - self.momentum)
            self._pending = None


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """``start`` at step 0, linearly to ``end`` at ``warmup_steps``, then ``end`` (DINO's teacher
    temperature: 0.04 -> 0.07 over 30 epochs; LAFS's code: 0.07 -> 0.04)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


class PrototypeDistillation(nn.Module):
    """The shared body of a student / EMA-teacher objective over prototypes (DINO, ProS, LAFS).

    Builds, from ``params`` (any params object with the fields below) and the student ``backbone``:
    ``head`` (:class:`PrototypeHead`), ``teacher_backbone`` and ``teacher_head`` (frozen copies, the
    teacher network always in eval mode), ``centre`` and a ``step`` buffer (steps done, so that the
    teacher temperature continues exactly after a resume). A subclass adds ``view_transform`` and a
    ``forward`` that computes the logits of its views and returns :meth:`distill`. The teacher is
    the exported backbone.

    Fields read from ``params``: ``n_prototypes``, ``hidden_dim``, ``bottleneck_dim``,
    ``student_temperature``, ``teacher_temperature``, ``warmup_teacher_temperature``,
    ``teacher_temperature_warmup_steps``, ``centre_momentum``, ``momentum`` (EMA at step 0, cosine to
    1), ``freeze_prototypes_steps``; optional ``head_layers`` (3), ``learn_norm`` (False) and
    ``prototype_init`` (``trunc_normal``; see :class:`PrototypeHead`).
    """

    def __init__(self, params: Any, backbone: nn.Module) -> None:
        import copy

        super().__init__()
        self.params = params
        self.backbone = backbone
        self.head = PrototypeHead(backbone.embed_dim, params.n_prototypes, hidden_dim=params.hidden_dim,
                                  bottleneck_dim=params.bottleneck_dim, layers=getattr(params, "head_layers", 3),
                                  learn_norm=getattr(params, "learn_norm", False),
                                  prototype_init=getattr(params, "prototype_init", "trunc_normal"))
        self.teacher_backbone = copy.deepcopy(backbone).requires_grad_(False).eval()
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.centre = Centre(params.n_prototypes, params.centre_momentum)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> PrototypeDistillation:
        super().train(mode)
        self.teacher_backbone.eval()  # targets without dropout / drop-path (LAFS's code leaves them on)
        return self

    def param_groups(self) -> list[Any]:
        """DINO: no weight decay on biases, norms and prototype gains (0/1-D tensors outside the backbone)."""
        from facerep.types import ParamGroup

        flat = [p for n, p in self.named_parameters() if not n.startswith("backbone.") and p.ndim < 2 and p.requires_grad]
        return [ParamGroup(params=flat, weight_decay=0.0, name=f"{type(self).__name__} 0/1-D")]

    def teacher_temperature(self) -> float:
        p = self.params
        return linear_warmup(int(self.step), p.teacher_temperature_warmup_steps, p.warmup_teacher_temperature, p.teacher_temperature)

    def distill(self, student_logits: Sequence[torch.Tensor], teacher_logits: torch.Tensor) -> Any:
        """The loss of one step: ``student_logits`` one ``(B, K)`` per view (the teacher's views first),
        ``teacher_logits`` ``(G * B, K)`` view-major. Stages the centre update when training; logs
        ``teacher_entropy`` (one image's target) and ``mean_entropy`` (the batch-mean target)."""
        from facerep.types import LossOutput

        b = student_logits[0].shape[0]
        with torch.no_grad():
            tau_t = self.teacher_temperature()
            probs = teacher_distribution(teacher_logits, self.centre.centre, tau_t)
        loss = prototype_distillation_loss(student_logits, probs.split(b), self.params.student_temperature)
        if self.training:
            self.centre.stage(teacher_logits)
        with torch.no_grad():  # DINO's collapses: mean_entropy falls (one prototype), or teacher_entropy rises to it (flat)
            mean_p = probs.mean(0)
            logs = {"teacher_entropy": float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()),
                    "mean_entropy": float(-(mean_p * mean_p.clamp_min(1e-12).log()).sum()), "teacher_temperature": tau_t}
        return LossOutput(loss, logs)

    def before_optimizer_step(self, step: int) -> None:
        if step < self.params.freeze_prototypes_steps:
            self.head.cancel_prototype_gradients()

    @torch.no_grad()
    def after_micro_batch(self, step: int, micro: int, n_micro: int) -> None:
        """DINO's loss updates the centre in every call (``main_dino.py:390-400``): each
        micro-batch's teacher outputs move it before the next forward."""
        self.centre.commit()

    @torch.no_grad()
    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        from facerep.engine.ema import cosine_momentum, momentum_update

        m = cosine_momentum(step, max_steps, self.params.momentum)
        momentum_update(self.teacher_backbone, self.backbone, m, copy_buffers=True)  # buffers: BN statistics of a CNN student
        momentum_update(self.teacher_head, self.head, m)
        self.centre.commit()
        self.step.fill_(step + 1)

    def exported_backbone(self) -> nn.Module:
        return self.teacher_backbone
