"""Drive the runner's own training step on fixed inputs, for equivalence tests against reference
numbers (a method's official code run on the same tiny inputs).

:func:`runner_steps` runs exactly what ``facerep run`` runs per optimizer step —
:func:`facerep.engine.model._train_step` (micro-batches, ``loss / k``, ``after_micro_batch``,
``before_optimizer_step``, the clipped / loss-scaled step, ``after_optimizer_step``) with the
optimizer, clipping and per-iteration schedules that :mod:`facerep.engine.optim` builds from a
``train`` block — but feeds given *float* views (already normalised, as the reference code saw
them) instead of uint8 images from the data loader.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from facerep.config import TrainConfig, structure
from facerep.engine.model import PretrainModel, _train_step
from facerep.engine.optim import build_optim_wrapper, build_schedulers

__all__ = ["assert_dino_schedules", "runner_steps", "schedule_trace"]

_CALLS = itertools.count()


def runner_steps(objective: torch.nn.Module, batches: Sequence[Mapping[str, Any]], train: TrainConfig | Mapping[str, Any], *,
                 global_batch: int | None = None, max_steps: int | None = None) -> tuple[list[dict[str, float]], Any]:
    """Train ``objective`` for ``len(batches)`` optimizer steps, one batch each.

    Args:
        objective: a built objective (it holds its backbone), on CPU.
        batches: per optimizer step ``{"views": [float (k B, 3, h, w)], "extras": {...}}`` — the
            ``k = train.accumulate_steps`` micro-batches stacked along dim 0, as the loader gives them.
        train: the ``train`` block (a :class:`TrainConfig` or its dict): optimizer, lr (scaled by
            ``global_batch`` when ``lr_reference_batch`` is set), schedule, ``grad_clip``,
            ``grad_clip_mode``, ``accumulate_steps``, ``precision``.
        global_batch: samples per optimizer step for lr scaling (default: the first batch's size).
        max_steps: the run length the schedules and the objective see (default ``train.max_steps``).

    Returns:
        ``(logs, optim_wrapper)``: per step the logged values (``loss`` first), and the wrapper
        (its optimizer's state and param groups, e.g. the learning rates used).
    """
    from mmengine.logging import MessageHub

    cfg = train if isinstance(train, TrainConfig) else structure(dict(train), TrainConfig, path="train")
    n = max_steps if max_steps is not None else cfg.max_steps
    model = _FloatViewsModel(objective, precision=cfg.precision, channels_last=False, accumulate_steps=cfg.accumulate_steps)
    if global_batch is None:
        global_batch = int(batches[0]["views"][0].shape[0])
    wrapper, lr = build_optim_wrapper(model, cfg, global_batch, "cpu")
    schedulers = _schedulers(wrapper, cfg, lr)
    hub = MessageHub.get_instance(f"facerep_runner_steps_{next(_CALLS)}")  # a new instance is the current one
    hub.update_info("max_iters", n)
    logs = []
    model.train()
    for step, batch in enumerate(batches):
        hub.update_info("iter", step)
        out = _train_step(model, model, dict(batch), wrapper)
        logs.append({name: float(value) for name, value in out.items()})
        for s in schedulers:
            s.step()
    return logs, wrapper


def schedule_trace(train: TrainConfig | Mapping[str, Any], lr: float, weight_decay: float, steps: int) -> tuple[list[float], list[float]]:
    """The learning rate and weight decay the runner's schedules give at steps ``0 .. steps - 1``
    (built from ``train.schedule`` as :func:`facerep.engine.optim.build_schedulers` does, on one
    decayed parameter group with peak ``lr`` and ``weight_decay``), to compare with a reference
    code's per-iteration schedules."""
    from mmengine.optim import OptimWrapper

    cfg = train if isinstance(train, TrainConfig) else structure(dict(train), TrainConfig, path="train")
    p = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(torch.optim.AdamW([{"params": [p], "weight_decay": weight_decay}], lr=lr))
    schedulers = _schedulers(wrapper, cfg, lr)
    lrs, wds = [], []
    for _ in range(steps):
        lrs.append(wrapper.param_groups[0]["lr"])
        wds.append(wrapper.param_groups[0]["weight_decay"])
        for s in schedulers:
            s.step()
    return lrs, wds


def assert_dino_schedules(train: TrainConfig | Mapping[str, Any], recipe: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """Per iteration, the runner's learning rate and weight decay and
    :class:`~facerep.prototypes.PrototypeDistillation`'s EMA momentum and teacher temperature equal
    a DINO-style reference (DINO's ``cosine_scheduler`` and ``DINOLoss.teacher_temp_schedule``, as
    ProS's and LAFS's fixtures store them): ``tensors["schedule/lr" | "schedule/weight_decay" |
    "schedule/momentum" | "schedule/teacher_temperature"]`` over ``recipe["epochs"]`` iterations
    (one iteration per epoch), with ``recipe`` giving ``peak_lr``, ``weight_decay``,
    ``momentum_teacher``, ``warmup_teacher_temp``, ``teacher_temp``, ``warmup_teacher_temp_epochs``."""
    from facerep.engine.ema import cosine_momentum
    from facerep.prototypes import linear_warmup

    n = recipe["epochs"]
    lrs, wds = schedule_trace(train, recipe["peak_lr"], recipe["weight_decay"], n)
    moms = [cosine_momentum(i, n, recipe["momentum_teacher"]) for i in range(n)]
    temps = [linear_warmup(i, recipe["warmup_teacher_temp_epochs"] - 1, recipe["warmup_teacher_temp"], recipe["teacher_temp"])
             for i in range(n)]
    for name, got, rtol in (("lr", lrs, 1e-9), ("weight_decay", wds, 1e-9), ("momentum", moms, 0.0), ("teacher_temperature", temps, 0.0)):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), tensors[f"schedule/{name}"], rtol=rtol, atol=1e-12,
                                   msg=lambda m, name=name: f"schedule/{name}: {m}")


def _schedulers(wrapper: Any, cfg: TrainConfig, lr: float) -> list[Any]:
    """The per-iteration mmengine schedulers the runner builds (``ParamSchedulerHook`` steps them)."""
    from mmengine.registry import PARAM_SCHEDULERS

    out = []
    for spec in build_schedulers(cfg, lr):
        spec = dict(spec)
        out.append(PARAM_SCHEDULERS.get(spec.pop("type"))(wrapper, **spec))
    return out


class _FloatViewsModel(PretrainModel):
    """The runner's model, fed float views as they are (no uint8 -> float preprocessing)."""

    def prepare(self, data: dict[str, Any]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor] | None]:
        return [v.float() for v in data["views"]], data.get("extras")
