"""The mmengine model around an :class:`~facerep.protocols.Objective`, and its training step."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.optim import OptimWrapper

__all__ = ["PretrainDDP", "PretrainModel", "compile_backbones", "cpu_bf16_is_native", "effective_precision"]

#: ``FACEREP_CPU_BF16=emulated`` keeps bf16 autocast on a CPU without bf16 kernels (tests of that path).
CPU_BF16_ENV = "FACEREP_CPU_BF16"


def cpu_bf16_is_native() -> bool:
    """Whether this CPU's oneDNN has bf16 kernels (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def effective_precision(precision: str, device_type: str) -> tuple[str, str | None]:
    """The precision a run trains in, and why it differs from the config's (None when it does not).

    bf16 autocast on a CPU without bf16 kernels (AVX2 only: no AVX512-BF16, no AMX) is emulated:
    on a 2-core AMD EPYC (AVX2) host a ResNet-18 step at batch 128, 64 px took 14.1 s in bf16 against
    0.87 s in fp32 (16x). There the run trains in fp32 and says so, unless ``FACEREP_CPU_BF16=emulated``.
    """
    if precision == "bf16" and device_type == "cpu" and os.environ.get(CPU_BF16_ENV) != "emulated" and not cpu_bf16_is_native():
        capability = torch.backends.cpu.get_cpu_capability()
        return "fp32", (f"train.precision bf16 on a CPU without bf16 kernels (no AVX512-BF16 / AMX; {capability}): "
                        f"bf16 autocast is emulated there, ~16x slower than fp32; training in fp32 "
                        f"(set train.precision: fp32 to silence this, or {CPU_BF16_ENV}=emulated to keep bf16)")
    return precision, None


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


def compile_backbones(objective: torch.nn.Module, warn: Callable[[str], None]) -> list[str]:
    """``train.compile``: ``torch.compile`` the forward of the objective's backbone and of its copies
    (every submodule of the backbone's class: MoCo's key encoder, a teacher), in place; returns
    their names in the objective.

    In place (``Module.compile``'s way: the module's ``__call__`` goes through the compiled
    function) rather than wrapping: the modules, their state-dict keys (no ``_orig_mod.``), the
    parameters that EMA updates and the optimizer hold, SyncBN / DDP around them stay as they are.
    The backbone rather than the whole objective: it is most of the step and traces into one graph,
    where objectives break graphs at every logged ``float(...)``, Sinkhorn's range check and
    collective. ``dynamic=False``: view sizes are fixed for a run, so each size (and grad mode)
    compiles once to static kernels; dynamo guards on modules' type and tensors, not identity, so
    the copies share those compiles.

    Where torch cannot compile (no C++ compiler on CPU, no Triton on CUDA, a dynamo error tracing
    or guarding the forward) the compile raises a ``TorchDynamoException`` before the module's
    forward has run (a forward that traces into one graph; one that breaks its graph may have run
    the graphs before the failing one): ``warn`` is called once, every module of this call goes back
    to its eager forward, and the step continues eagerly. An error of the forward itself (a shape
    mismatch that dynamo meets tracing it) is raised as an eager run raises it, not taken for a
    compile failure: see :class:`_CompiledCall`.
    """
    kind = type(objective.backbone)
    names = [name for name, m in objective.named_modules() if type(m) is kind]
    try:
        compiled = {name: torch.compile(objective.get_submodule(name)._call_impl, dynamic=False) for name in names}
    except Exception as e:  # e.g. a Python torch.compile does not support yet
        warn(_fallback_message(e))
        return []
    state = _CompileState(objective, names, warn)
    for name, fn in compiled.items():
        module = objective.get_submodule(name)
        module._compiled_call_impl = _CompiledCall(fn, module._call_impl, state)
    return names


def _fallback_message(e: BaseException) -> str:
    import torch._dynamo.exc

    why = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, torch._dynamo.exc.ShortenTraceback):  # the backend: inductor's C++ or Triton toolchain
        fix = "Install a C++ compiler (g++, or name one in CXX) for CPU, Triton for CUDA, or set train.compile: false"
    else:  # dynamo itself (tracing, guards) or torch.compile's setup: a limitation of this torch
        fix = "Another torch version may compile it (TORCH_LOGS=dynamo shows where it fails), or set train.compile: false"
    return f"train.compile: torch.compile cannot compile here ({type(e).__name__}: {why}); training runs eager. {fix}"


class _CompileState:
    """Shared by the compiled modules of one run: the first compile failure turns them all eager."""

    def __init__(self, objective: torch.nn.Module, names: list[str], warn: Callable[[str], None]) -> None:
        self.objective, self.names, self.warn = objective, names, warn
        self.failed = False

    def fall_back(self, e: BaseException) -> None:
        if self.failed:  # a compiled call still under way when another failed (a module nested in another)
            return
        self.failed = True
        for name in self.names:
            self.objective.get_submodule(name)._compiled_call_impl = None
        self.warn(_fallback_message(e))


class _CompiledCall:
    """A module's compiled ``__call__``; on a compile failure, its eager one. A copy of the module
    (``copy.deepcopy``) gets its own eager forward back, not this, which runs the original's.

    A compile failure is any ``TorchDynamoException`` (``ShortenTraceback``: BackendCompilerFailed
    around InductorError, TritonMissing; ``InternalTorchDynamoError``: dynamo's own bugs, such as
    torch 2.11's guards on attrs-generated methods; ``Unsupported``; ``TorchRuntimeError``) that the
    eager forward does not repeat. ``TorchRuntimeError`` is also what a genuine error of the forward
    (a shape mismatch) becomes when dynamo meets it tracing, so the call is rerun eagerly before
    falling back: when the eager forward raises too, that error is raised as an eager run raises it
    (its own traceback, a note naming the compile failure) and the modules stay compiled; only
    when it succeeds do the modules go eager, with one warning. Errors of the compiled code once it
    runs (out of memory) are not compile failures and are raised.
    """

    def __init__(self, fn: Callable[..., Any], eager: Callable[..., Any], state: _CompileState) -> None:
        self.fn, self.eager, self.state = fn, eager, state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch._dynamo.exc

        try:
            return self.fn(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as e:
            failure = e
        try:  # outside the except: the forward's own error comes without the compile failure as its context
            out = self.eager(*args, **kwargs)
        except Exception as e:
            e.add_note(f"train.compile: torch.compile failed on this call first ({type(failure).__name__}); the eager forward fails too")
            raise
        self.state.fall_back(failure)
        return out

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None
