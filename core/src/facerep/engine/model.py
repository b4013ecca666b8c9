"""The mmengine model around an :class:`~facerep.protocols.Objective`, and its training step."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.optim import OptimWrapper

__all__ = ["PretrainDDP", "PretrainModel"]


class PretrainModel(BaseModel):
    """Holds the objective (which holds the backbone). ``forward`` returns the loss dict."""

    def __init__(self, objective: torch.nn.Module, *, precision: str = "fp32", channels_last: bool = False,
                 accumulate_steps: int = 1) -> None:
        super().__init__()
        self.objective = objective
        self.precision = precision
        self.channels_last = channels_last
        self.accumulate_steps = accumulate_steps

    def forward(self, views: list[torch.Tensor], data_samples: Any = None, mode: str = "loss",
                extras: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        out = self.objective(views) if extras is None else self.objective(views, extras=extras)
        logs = {k: torch.as_tensor(float(v)) for k, v in out.logs.items()}
        return {"loss": out.loss, **logs}

    def prepare(self, data: dict[str, Any]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor] | None]:
        """uint8 views from the loader -> normalised float views on the model's device, and the
        batched extras (dtype kept) when the view transform gives any."""
        device = next(self.parameters()).device
        views = []
        for v in data["views"]:
            v = self.objective.backbone.preprocess(v.to(device, non_blocking=True))
            views.append(v.contiguous(memory_format=torch.channels_last) if self.channels_last else v)
        extras = data.get("extras")
        if extras is not None:
            extras = {name: t.to(device, non_blocking=True) for name, t in extras.items()}
        return views, extras

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision in ("bf16", "fp16"):  # fp16's loss scaler is in the optim wrapper
            device_type = next(self.parameters()).device.type
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
        return contextlib.nullcontext()

    def train_step(self, data: dict[str, Any], optim_wrapper: OptimWrapper) -> dict[str, torch.Tensor]:
        return _train_step(self, self, data, optim_wrapper)


class PretrainDDP(MMDistributedDataParallel):
    """DDP wrapper running the same step; the forward goes through DDP for gradient sync."""

    def train_step(self, data: dict[str, Any], optim_wrapper: OptimWrapper) -> dict[str, torch.Tensor]:
        return _train_step(self.module, self, data, optim_wrapper)


def _micro_batches(data: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """Split one step's loader batch (``k`` micro-batches, stacked) into ``k`` batches."""
    if k == 1:
        return [data]
    views = [v.chunk(k) for v in data["views"]]
    extras = {name: t.chunk(k) for name, t in (data.get("extras") or {}).items()}
    out = []
    for j in range(k):
        micro: dict[str, Any] = {"views": [v[j] for v in views]}
        if extras:
            micro["extras"] = {name: t[j] for name, t in extras.items()}
        out.append(micro)
    return out


def _train_step(model: PretrainModel, caller: torch.nn.Module, data: dict[str, Any],
                optim_wrapper: OptimWrapper) -> dict[str, torch.Tensor]:
    """One optimizer step over ``train.accumulate_steps`` micro-batches: forward, backward of
    ``loss / k`` (DDP syncs gradients on the last one only), the objective's ``after_micro_batch``
    after each, then ``before_optimizer_step``, the (clipped, unscaled) step, ``after_optimizer_step``."""
    hub = MessageHub.get_current_instance()
    step, max_steps = int(hub.get_info("iter", 0)), int(hub.get_info("max_iters", 1))
    objective = model.objective
    micros = _micro_batches(data, model.accumulate_steps)
    k = len(micros)
    per_micro = getattr(objective, "after_micro_batch", None)  # optional, API 1.4
    total: dict[str, torch.Tensor] = {}
    for j, micro in enumerate(micros):
        views, extras = model.prepare(micro)
        sync = j == k - 1 or not hasattr(caller, "no_sync")
        with (contextlib.nullcontext() if sync else caller.no_sync()):
            with optim_wrapper.optim_context(caller), model.autocast():
                outputs = caller(views, mode="loss") if extras is None else caller(views, mode="loss", extras=extras)
            loss = outputs.pop("loss")
            if not torch.isfinite(loss):
                from facerep.errors import TrainingError

                where = f"step {step + 1}" + (f", micro-batch {j + 1} of {k}" if k > 1 else "")
                raise TrainingError(f"non-finite loss ({loss.item()}) at {where}; lower train.optimizer.lr, add train.grad_clip or "
                                    f"check the data; the work dir keeps its last checkpoint")
            optim_wrapper.backward(optim_wrapper.scale_loss(loss / k))
        if per_micro is not None:
            per_micro(step, j, k)
        for name, value in {"loss": loss.detach(), **outputs}.items():
            total[name] = total.get(name, 0.0) + value.detach() / k
    objective.before_optimizer_step(step)
    if optim_wrapper.should_update():
        optim_wrapper.step()
        optim_wrapper.zero_grad()
    objective.after_optimizer_step(step, max_steps)
    return total
