"""Optimizer, optim wrapper and per-iteration schedules from :class:`~facerep.config.TrainConfig`."""

from __future__ import annotations

from typing import Any

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import LinearParamScheduler
from mmengine.registry import PARAM_SCHEDULERS
from torch import nn

from facerep.config import TrainConfig
from facerep.errors import ConfigError

__all__ = ["LinearWarmupLR", "LossScaledOptimWrapper", "build_optim_wrapper", "build_schedulers", "clip_grad_norm_per_tensor_",
           "param_groups"]


def param_groups(model: nn.Module, weight_decay: float, no_decay: tuple[str, ...], *,
                 exclude: set[int] | None = None) -> list[dict[str, Any]]:
    """Two groups: parameters whose name contains a ``no_decay`` key (or that are 1-d) get no decay.
    Parameters whose ``id`` is in ``exclude`` (claimed by an objective's own groups) are left out."""
    decay, skip = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (exclude and id(p) in exclude):
            continue
        lname = name.lower()
        (skip if no_decay and (p.ndim <= 1 or any(k in lname for k in no_decay)) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}] if decay else []
    if skip:
        groups.append({"params": skip, "weight_decay": 0.0})
    return groups


def _objective_groups(model: nn.Module, cfg: TrainConfig, lr: float) -> list[dict[str, Any]]:
    """The groups an objective declares (``Objective.param_groups()``, optional), as optimizer groups."""
    objective = getattr(model, "objective", model)
    declared = objective.param_groups() if hasattr(objective, "param_groups") else []
    out, seen = [], set()
    for i, g in enumerate(declared):
        params = [p for p in g.params if p.requires_grad]
        if any(id(p) in seen for p in params):
            raise ConfigError(f"objective.param_groups(): group {i} ({g.name or 'unnamed'}) repeats a parameter of an earlier group")
        seen.update(id(p) for p in params)
        wd = cfg.optimizer.weight_decay if g.weight_decay is None else g.weight_decay
        if not g.adapt and cfg.optimizer.type == "lars" and wd != 0:
            raise ConfigError(f"objective.param_groups(): group {i} ({g.name or 'unnamed'}) asks for no LARS adaptation but has weight "
                              f"decay {wd}; LARS exempts only groups without weight decay (SwAV, BYOL, Barlow Twins: biases and norms)")
        group: dict[str, Any] = {"params": params, "weight_decay": wd, "lr": lr * g.lr_scale}
        if cfg.optimizer.type == "lars":
            group["always_adapt"] = g.adapt
        out.append(group)
    return out


def build_optim_wrapper(model: nn.Module, cfg: TrainConfig, global_batch: int, device_type: str) -> tuple[OptimWrapper, float]:
    """Returns the wrapper and the (batch-scaled) peak learning rate."""
    opt = cfg.optimizer
    lr = opt.lr * (global_batch / opt.lr_reference_batch if opt.lr_reference_batch else 1.0)
    declared = _objective_groups(model, cfg, lr)
    claimed = {id(p) for g in declared for p in g["params"]}
    groups = declared + param_groups(model, opt.weight_decay, opt.no_decay, exclude=claimed)
    if opt.type == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=opt.momentum)
    elif opt.type == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=opt.betas, eps=opt.eps)
    else:
        # LARS (You et al. 2017) from timm; SwAV / Bulat et al. use LARC with trust 0.001 and no
        # clipping, adapting every parameter (always_adapt), hence no no-decay group in their preset.
        from timm.optim import Lars

        optimizer = Lars(groups, lr=lr, momentum=opt.momentum, trust_coeff=opt.trust_coefficient, trust_clip=False, always_adapt=True)
    clip = {"max_norm": cfg.grad_clip} if cfg.grad_clip else None
    if cfg.precision == "fp16":
        wrapper: OptimWrapper = LossScaledOptimWrapper(optimizer=optimizer, clip_grad=clip, device_type=device_type)
    else:  # fp32, or bf16 (no loss scaling: the model's autocast context handles it, also on CPU)
        wrapper = OptimWrapper(optimizer=optimizer, clip_grad=clip)
    if clip and cfg.grad_clip_mode == "per_tensor":
        wrapper.clip_func = clip_grad_norm_per_tensor_
    return wrapper, lr


@PARAM_SCHEDULERS.register_module(name="FacerepLinearWarmupLR", force=True)
class LinearWarmupLR(LRSchedulerMixin, LinearParamScheduler):
    """Linear warm-up in closed form: ``lr_i = base (f0 + (1 - f0) min(i / span, 1))``.

    mmengine's LinearLR multiplies the current value step by step, so it cannot start from 0 (the
    official DINO, LAFS and MAE / MCF warm-ups do) and always peaks on the last warm-up step;
    ``span`` says where the peak is (``warmup_steps - 1`` or ``warmup_steps``)."""

    def __init__(self, optimizer: Any, *, start_factor: float, span: int, **kwargs: Any) -> None:
        self.span = max(span, 1)
        super().__init__(optimizer, start_factor=start_factor, end_factor=1.0, **kwargs)

    def _get_value(self) -> list[float]:
        t = min(self.last_step / self.span, 1.0)
        return [base * (self.start_factor + (1.0 - self.start_factor) * t) for base in self.base_values]


@torch.no_grad()
def clip_grad_norm_per_tensor_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each tensor's gradient to norm <= ``max_norm`` on its own (``train.grad_clip_mode:
    per_tensor``), as DINO's ``clip_gradients`` (``dino/utils.py:132-142``), which LAFS copies:
    ``g <- g * min(1, max_norm / (||g|| + 1e-6))``. Returns the largest norm before clipping."""
    grads = [p.grad for p in params]
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)
    return torch.stack(norms).max()


class LossScaledOptimWrapper(AmpOptimWrapper):
    """fp16 with torch's dynamic loss scaler (``torch.amp.GradScaler``) on CUDA or CPU.

    mmengine's :class:`AmpOptimWrapper` refuses to be built without an accelerator and autocasts
    in its ``optim_context``; this subclass keeps its scaled ``backward``, unscale-clip-step and
    scaler state in checkpoints, takes the scaler for ``device_type``, and leaves autocast to
    :meth:`facerep.engine.model.PretrainModel.autocast` (one place for fp16 and bf16)."""

    def __init__(self, *, device_type: str, **kwargs: Any) -> None:
        OptimWrapper.__init__(self, **kwargs)  # skips AmpOptimWrapper's CUDA-only assertion
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler(device_type)
        self.cast_dtype = None

    optim_context = OptimWrapper.optim_context


def build_schedulers(cfg: TrainConfig, lr: float) -> list[dict[str, Any]]:
    """Linear warm-up, cosine decay to ``final_factor * lr``; optional cosine weight-decay schedule."""
    s, n = cfg.schedule, cfg.max_steps
    warm = min(s.warmup_steps, n)
    out: list[dict[str, Any]] = []
    if warm > 0:
        # the warm-up also sets step `warm` to the peak, where mmengine's cosine (chained: it starts
        # from the current value) takes over; without it a 1-step warm-up would leave the cosine at
        # the start value
        end = warm + 1 if warm < n else warm
        span = warm if s.warmup_peak == "after_warmup" else warm - 1
        out.append(dict(type="FacerepLinearWarmupLR", start_factor=s.warmup_start_factor, span=span, by_epoch=False, begin=0, end=end))
    if n > warm:
        out.append(dict(type="CosineAnnealingLR", T_max=n - warm, eta_min=lr * s.final_factor, by_epoch=False, begin=warm, end=n))
    if s.final_weight_decay is not None and cfg.optimizer.weight_decay > 0:
        ratio = s.final_weight_decay / cfg.optimizer.weight_decay  # a ratio keeps no-decay groups at 0
        out.append(dict(type="CosineAnnealingParamScheduler", param_name="weight_decay", T_max=n, eta_min_ratio=ratio, by_epoch=False,
                        begin=0, end=n))
    return out
