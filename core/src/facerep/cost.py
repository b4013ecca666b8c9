"""What a pretraining run costs before it starts (``facerep run CONFIG --dry-run``): parameters,
training FLOPs per optimizer step, activation memory per process, and the time of the whole run on
this host and on a GPU of a stated throughput.

Everything is measured on the run's real components, built as the runner builds them (the data,
the backbone, the objective with its heads and frozen copies, ``PretrainModel`` and the optimizer
of the ``train`` block), on views that the objective's own view transform made from samples of
the run's dataset, so that view sizes, crop counts and extras are the real ones:

- FLOPs: torch's counter (``torch.utils.flop_counter.FlopCounterMode``) around one training step
  (forward + backward of the objective, frozen copies' forwards included) at a small batch, divided
  by that batch and multiplied by ``batch_size x accumulate_steps`` (per process) and the number of
  processes (global). It counts matrix multiplications, convolutions and attention, two FLOPs per
  multiply-add; elementwise work (norms, activations, Sinkhorn, the optimizer) is not counted.
  Papers' "FLOPs" of a network (ResNet-50: 4.1 G, ViT-B/16: 17.6 G at 224 px) are multiply-adds,
  half of torch's count: the output gives both.
- Activation memory: the bytes of the tensors autograd saves for backward during that step
  (``torch.autograd.graph.saved_tensors_hooks``; deduplicated by storage, parameters and buffers
  excluded), measured at two batches and extrapolated linearly to ``batch_size`` (the part that
  does not grow with the batch, e.g. autocast's low-precision copies of the weights, is kept once).
  That is what a step holds at the end of its forward, where the peak is; the backward adds
  transient buffers of about one layer. Weights, gradients and optimizer state are given apart.
- Time on this host: a few training steps (the real ``train_step``: autocast, backward, optimizer),
  timed after a warm-up step, at the config's batch, or at the largest divisor of it whose step
  takes at most 3 s, scaled linearly (an upper bound: a CPU's time per sample falls with the
  batch); plus the data (reading a sample and the view transform, timed on the samples above; in
  the step when ``num_workers`` is 0 or the workers have no spare core) and the set-up (building
  the components; decoding a preloaded pool: its files x one decode / cores). Skipped, with a
  note, when the config wants CUDA and this host has none.
- Time on a GPU: the per-process FLOPs of all steps over ``gpu_tflops x gpu_util``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import attrs
import torch

from facerep.build import build, resolve
from facerep.config import RunConfig, unstructure
from facerep.errors import ConfigError, FacerepError
from facerep.plugins import PluginSet, get_plugins

__all__ = ["GPU_PEAK_TFLOPS", "Cost", "HostTime", "PartCount", "count_flops", "estimate_cost", "format_cost", "forward_flops"]

#: The default GPU: NVIDIA H100 SXM's dense peak (TFLOP/s, torch's count) by the run's precision;
#: fp32 is the non-tensor-core rate (torch runs fp32 matmuls without TF32 unless told to).
GPU_PEAK_TFLOPS = {"fp16": 989.0, "bf16": 989.0, "fp32": 67.0}
GPU_NAME = "H100 SXM dense"
GPU_UTIL = 0.4  # a well-fed large-batch run reaches 30-50 % of the dense peak (model FLOPs utilisation)

_COUNT_BATCHES = (2, 4)  # two small batches: the activation bytes' fixed part and their growth per sample
_STEP_SECONDS = 3.0  # the longest step timed (CPU presets: their full batch)
_REAL_SAMPLES = 16  # samples decoded and transformed; larger batches repeat them
_MAX_FIRST_BATCH = 16  # the largest first batch tried for an objective that refuses smaller ones


@attrs.frozen
class PartCount:
    """Parameters (elements) of one part of the model."""

    name: str
    total: int
    trainable: int


@attrs.frozen
class HostTime:
    """The run on this host.

    Attributes:
        device: where the steps were timed (``cpu``, ``cuda:0``).
        threads: torch's intra-op threads.
        timed_batch: the batch the steps were timed at (scaled to the config's).
        timed_steps: how many steps were timed after a warm-up; 0: the counted step was (slow steps).
        step_seconds: one optimizer step's compute at the config's batch (all micro-batches).
        data_seconds: one optimizer step's data (decoding + view transform) in the loader.
        data_overlaps: whether the loader's workers run beside the step (spare cores) or take turns.
        setup_seconds: building the components (and decoding a preloaded pool).
        run_seconds: the whole pretraining: set-up + ``max_steps`` steps.
    """

    device: str
    threads: int
    timed_batch: int
    timed_steps: int
    step_seconds: float
    data_seconds: float
    data_overlaps: bool
    setup_seconds: float
    run_seconds: float


@attrs.frozen
class Cost:
    """What a run costs; see the module docstring for how each number is measured.

    ``flops_per_sample`` is torch's count (2 per multiply-add) of one sample's training step
    (forward + backward of every view, frozen copies' forwards included); ``*_flops`` properties
    scale it. ``backbone_forward``: torch's count of one image's backbone forward, by view size.
    """

    name: str
    parts: tuple[PartCount, ...]
    buffer_values: int
    views: tuple[tuple[int, ...], ...]  # (C, H, W) of each view of one sample
    batch_size: int
    accumulate_steps: int
    world_size: int
    max_steps: int
    precision: str
    optimizer: str
    counted_at: tuple[int, ...]
    count_device: str
    flops_per_sample: float
    backbone_forward: tuple[tuple[int, int], ...]  # (view side, FLOPs per image)
    activation_fixed_bytes: float
    activation_bytes_per_sample: float
    state_bytes: int
    gpu_tflops: float
    gpu_util: float
    gpu_note: str
    host: HostTime | None
    notes: tuple[str, ...] = ()

    @property
    def samples_per_step(self) -> int:
        """Per process and optimizer step."""
        return self.batch_size * self.accumulate_steps

    @property
    def step_flops(self) -> float:
        """Training FLOPs of one optimizer step in one process."""
        return self.flops_per_sample * self.samples_per_step

    @property
    def global_step_flops(self) -> float:
        return self.step_flops * self.world_size

    @property
    def run_flops(self) -> float:
        """All processes, all steps."""
        return self.global_step_flops * self.max_steps

    @property
    def activation_bytes(self) -> float:
        """Saved activations of one micro-batch of ``batch_size`` in one process."""
        return self.activation_fixed_bytes + self.activation_bytes_per_sample * self.batch_size

    @property
    def gpu_step_seconds(self) -> float:
        return self.step_flops / (self.gpu_tflops * 1e12 * self.gpu_util)

    @property
    def gpu_run_seconds(self) -> float:
        """Every process on its own GPU, all in parallel."""
        return self.gpu_step_seconds * self.max_steps


def _attention_formulas() -> dict[Any, Callable[..., int]]:
    """torch's counter knows the CUDA attention kernels but not the CPU one that
    ``scaled_dot_product_attention`` calls on a CPU: without these, a ViT-B/16's attention (0.7 of
    its 17.6 GMACs) would go uncounted there."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    out: dict[Any, Callable[..., int]] = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in fc.flop_registry:
        out[fwd] = lambda q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(q, k, v)
    if bwd is not None and bwd not in fc.flop_registry:
        out[bwd] = lambda g, q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_backward_flop_count(g, q, k, v)
    return out


def _flop_counter() -> Any:
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_attention_formulas())


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """torch's FLOP count of ``fn(*args, **kwargs)`` (2 per multiply-add; backward included when
    ``fn`` runs one)."""
    with _flop_counter() as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def forward_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    """torch's FLOP count of ``module(x)`` without gradients (published "FLOPs" are half of it)."""
    with torch.no_grad():
        return count_flops(module, x)


class _SavedBytes:
    """Bytes of the distinct storages autograd saves for backward, parameters and buffers excluded."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        self.seen: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # no plain storage (sparse, nested): not counted
            return t
        ptr = storage.data_ptr()
        if ptr and ptr not in self.skip:
            self.seen[ptr] = storage.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def _all_parameters(objective: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """Every parameter and buffer, also of modules an objective keeps outside its state dict
    (``self.__dict__["teacher"] = ...``: MCF's frozen teacher; modules built on first use)."""
    params: dict[int, torch.nn.Parameter] = {}
    buffers: dict[int, torch.Tensor] = {}
    for module in [objective, *_hidden(objective)]:
        params.update((id(p), p) for p in module.parameters())
        buffers.update((id(b), b) for b in module.buffers())
    return list(params.values()), list(buffers.values())


def _hidden(objective: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules held as plain attributes of the objective or of its submodules (not registered)."""
    out: dict[int, torch.nn.Module] = {}
    stack = list(objective.modules())
    while stack:
        module = stack.pop()
        for value in vars(module).values():
            if isinstance(value, torch.nn.Module) and id(value) not in out:
                out[id(value)] = value
                stack.extend(value.modules())
    return list(out.values())


def _parts(objective: torch.nn.Module) -> tuple[tuple[PartCount, ...], int]:
    """Backbone / objective heads (trainable, outside the backbone) / frozen copies (momentum
    encoders, teachers: outside the backbone, no gradient); and the buffers' values."""
    params, buffers = _all_parameters(objective)
    backbone = {id(p) for p in objective.backbone.parameters()}
    counts = {"backbone": [0, 0], "objective heads": [0, 0], "frozen copies": [0, 0]}
    for p in params:
        part = "backbone" if id(p) in backbone else "objective heads" if p.requires_grad else "frozen copies"
        counts[part][0] += p.numel()
        counts[part][1] += p.numel() if p.requires_grad else 0
    parts = tuple(PartCount(name, total, trainable) for name, (total, trainable) in counts.items())
    return parts, sum(b.numel() for b in buffers)


def _state_bytes(objective: torch.nn.Module, optimizer: str) -> int:
    """Weights (fp32 masters under autocast too), gradients of the trainable ones and optimizer state
    (momentum: SGD, LARS; two moments: AdamW), and the buffers."""
    params, buffers = _all_parameters(objective)
    slots = 2 if optimizer == "adamw" else 1
    total = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return total + trainable * (1 + slots) + sum(b.numel() * b.element_size() for b in buffers)


def _find_param(data: Any, key: str) -> Any:
    """The first ``key`` in nested config params (a wrapped dataset's ``resize``)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_param(value, key)
            if found is not None:
                return found
    return None


def _few_files(data: Any, preloaded: list[dict[str, Any]]) -> Any:
    """``data`` (a plain config) with every ``core.image_folder`` in it, also inside a wrapping
    dataset, cut to its first few files per root and not preloaded: building the run's pool can
    take minutes (decoding 14,000 faces, or landmarks computed for each), a few samples do here.
    The params of those that preload go to ``preloaded``."""
    if isinstance(data, list):
        return [_few_files(v, preloaded) for v in data]
    if not isinstance(data, dict):
        return data
    out = {k: _few_files(v, preloaded) for k, v in data.items()}
    if out.get("name") == "core.image_folder" and isinstance(out.get("params"), dict):
        params = dict(out["params"])
        if params.get("preload"):
            preloaded.append(dict(params, preload=False))
        roots = []
        for root in params.get("roots") or []:
            root = dict(root) if isinstance(root, dict) else {"path": root}
            first = root.get("start") or 0
            root["stop"] = first + _REAL_SAMPLES if root.get("stop") is None else min(root["stop"], first + _REAL_SAMPLES)
            roots.append(root)
        out["params"] = dict(params, roots=roots, preload=False)
    return out


def _build_data(cfg: RunConfig, plugins: PluginSet, notes: list[str]) -> tuple[Any, float]:
    """A few samples of the run's dataset (:func:`_few_files`), and the seconds the run spends
    decoding its preloaded pools first (files x decode time / cores). Synthetic faces at the pool's
    ``resize`` stand in when the data cannot be read here (a paper preset's data on another machine)."""
    from facerep.config import ComponentConfig, structure

    assert cfg.data is not None
    preloaded: list[dict[str, Any]] = []
    small = structure(_few_files(unstructure(cfg.data), preloaded), ComponentConfig, path="data")
    try:
        dataset = build(resolve("dataset", small, "data", plugins))
        preload = 0.0
        for params in preloaded:  # every file listed (fast), a few decoded and timed
            pool = build(resolve("dataset", ComponentConfig("core.image_folder", params), "data", plugins))
            n = min(4, len(pool))
            tick = time.perf_counter()
            for i in range(n):
                pool[i]
            preload += len(pool) * (time.perf_counter() - tick) / max(1, n) / (os.cpu_count() or 1)
        return dataset, preload
    except (FacerepError, OSError) as exc:
        from facerep.data.synthetic import SyntheticFaces

        size = int(_find_param(unstructure(cfg.data.params), "resize") or 256)
        notes.append(f"data: not readable here ({str(exc).splitlines()[0]}); views made from synthetic {size} px faces")
        return SyntheticFaces(n=_REAL_SAMPLES, size=size, n_identities=4), 0.0


def _divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of ``n`` not above ``cap`` (a batch that keeps queue sizes divisible)."""
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


def _batch(items: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """A loader batch of ``size`` from the decoded items, repeated as needed."""
    from torch.utils.data import default_collate

    data = default_collate(items)
    reps = math.ceil(size / len(items))
    tile = lambda t: t.repeat(reps, *([1] * (t.dim() - 1)))[:size]
    out: dict[str, Any] = {"views": [tile(v) for v in data["views"]]}
    if "extras" in data:
        out["extras"] = {name: tile(t) for name, t in data["extras"].items()}
    return out


def _counted_step(model: Any, optim_wrapper: Any, items: list[dict[str, Any]], batch: int,
                  device: torch.device) -> tuple[float, int, float]:
    """One training step at ``batch``: its FLOPs, the bytes it saves for backward, its seconds."""
    saver = _SavedBytes(model)
    tick = time.perf_counter()
    with _flop_counter() as counter, torch.autograd.graph.saved_tensors_hooks(saver.pack, lambda x: x):
        model.train_step(_batch(items, batch), optim_wrapper)
    _sync(device)
    return float(counter.get_total_flops()), saver.total, time.perf_counter() - tick


def _larger_divisors(n: int, than: int) -> list[int]:
    return [d for d in range(than + 1, n + 1) if n % d == 0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_cost(cfg: RunConfig, plugins: PluginSet | None = None, *, time_steps: int = 2, gpu_tflops: float | None = None,
                  gpu_util: float = GPU_UTIL, world_size: int | None = None) -> Cost:
    """Measure what pretraining ``cfg`` costs (see the module docstring); a few seconds for the CPU
    presets. ``time_steps``: steps timed on this host (0: no host timing). ``gpu_tflops``: the GPU's
    peak in torch's count (default: :data:`GPU_PEAK_TFLOPS` for the run's precision). ``world_size``:
    processes of the run (default ``$WORLD_SIZE`` or 1). Raises :class:`~facerep.errors.ConfigError`
    when the config has nothing to pretrain; a component that cannot be built raises its own error."""
    if cfg.objective is None or cfg.data is None or cfg.backbone is None:
        raise ConfigError("cost: pretraining needs 'data', 'backbone' and 'objective'")
    if gpu_util <= 0 or gpu_util > 1:
        raise ConfigError(f"cost: gpu_util must be in (0, 1], got {gpu_util}")
    if gpu_tflops is not None and gpu_tflops <= 0:
        raise ConfigError(f"cost: gpu_tflops must be positive, got {gpu_tflops}")
    plugins = plugins or get_plugins()
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        cost = _estimate(cfg, plugins, time_steps=time_steps, gpu_tflops=gpu_tflops, gpu_util=gpu_util, world=world)
    if cfg.train.launcher == "pytorch" and world_size is None and "WORLD_SIZE" not in os.environ:
        cost = attrs.evolve(cost, notes=(*cost.notes, "launcher pytorch: the global figures are for 1 process; the run has as many "
                                                      "as torchrun starts (train.batch_size is per process)"))
    return cost


def _estimate(cfg: RunConfig, plugins: PluginSet, *, time_steps: int, gpu_tflops: float | None, gpu_util: float, world: int) -> Cost:
    from facerep.engine.model import PretrainModel, effective_precision
    from facerep.engine.optim import build_optim_wrapper
    from facerep.engine.stream import ViewStream

    t = cfg.train
    notes: list[str] = []
    cuda = torch.cuda.is_available()
    on_host = t.device == "cpu" or cuda or t.device == "auto"
    device = torch.device("cuda", 0) if cuda and t.device != "cpu" else torch.device("cpu")

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dataset, preload_seconds = _build_data(cfg, plugins, notes)
    assert cfg.objective is not None and cfg.backbone is not None
    objective = build(resolve("objective", cfg.objective, "objective", plugins),
                      backbone=build(resolve("backbone", cfg.backbone, "backbone", plugins)))
    setup = time.perf_counter() - start + preload_seconds

    # samples through the run's own stream: reading a sample, then the view transform, each timed
    stream = ViewStream(dataset, objective.view_transform(), seed=cfg.seed)
    n_real = min(_REAL_SAMPLES, len(dataset))
    items = [stream[0]]  # untimed: the first call sets things up (decoder, augmentation tables)
    tick = time.perf_counter()
    for k in range(1, n_real):
        dataset[stream.index_of(k)]
    decode = (time.perf_counter() - tick) / max(1, n_real - 1)
    tick = time.perf_counter()
    items += [stream[k] for k in range(1, n_real)]
    # a preloaded pool is decoded before the run, not per sample
    per_sample_data = max(0.0, (time.perf_counter() - tick) / max(1, n_real - 1) - (decode if preload_seconds else 0.0))
    views = tuple(tuple(v.shape) for v in items[0]["views"])

    # FLOPs and saved activations at two small batches; fp16 autocast is slow on a CPU, and bf16
    # saves the same bytes and counts the same FLOPs; bf16 on a CPU without bf16 kernels is what the
    # run itself avoids (effective_precision): fp32
    precision, why = effective_precision("bf16" if device.type == "cpu" and t.precision == "fp16" else t.precision, device.type)
    if why and t.precision == "bf16":
        notes.append(why)
    model = PretrainModel(objective, precision=precision, channels_last=t.channels_last).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optim_wrapper, _ = build_optim_wrapper(model, attrs.evolve(t, precision=precision), t.batch_size * t.accumulate_steps * world,
                                           device.type)
    # the first batch also warms up the second; an objective that initialises on its first batch
    # may need a larger one (FaRL's patch tokenizer fits 512 k-means centroids to the batch's patches)
    first = smallest = _divisor_at_most(t.batch_size, _COUNT_BATCHES[0])
    refused = ""
    while True:
        try:
            steps = [_counted_step(model, optim_wrapper, items, first, device)]
            break
        except Exception as exc:
            refused = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            larger = [d for d in _larger_divisors(t.batch_size, first) if d >= 2 * first]
            if not larger or larger[0] > _MAX_FIRST_BATCH:
                if first < t.batch_size:
                    raise ConfigError(f"cost: {cfg.objective.name} refuses a first batch of {first} samples, and a larger one is "
                                      f"too slow to count here ({refused})") from exc
                raise
            first = larger[0]
    if refused:
        notes.append(f"counted from batch {first}: the objective refuses a first batch of {smallest}"
                     f"{f' to {first // 2}' if first // 2 > smallest else ''} ({refused})")
    second = max([d for d in _larger_divisors(t.batch_size, first) if d <= 2 * first], default=first)
    steps.append(_counted_step(model, optim_wrapper, items, second, device))
    counted = (first, second)
    flops, saved, seconds = zip(*steps, strict=True)
    flops = [f / b for f, b in zip(flops, counted, strict=True)]
    if counted[0] != counted[1]:
        per_sample_act = max(0.0, (saved[1] - saved[0]) / (counted[1] - counted[0]))
        fixed_act = max(0.0, saved[0] - per_sample_act * counted[0])
    else:
        per_sample_act, fixed_act = saved[-1] / counted[-1], 0.0

    parts, buffer_values = _parts(objective)  # after the steps: some modules are built on first use
    state = _state_bytes(objective, t.optimizer.type)
    forward = []
    objective.backbone.eval()  # one image: BatchNorm in training mode needs two
    for side in sorted({v[-1] for v in views}):
        forward.append((side, forward_flops(objective.backbone, torch.zeros(1, views[0][0], side, side, device=device))))
    objective.backbone.train()

    host = None
    if time_steps > 0 and on_host:
        host = _time_host(model, optim_wrapper, items, cfg, device, (counted[-1], seconds[-1]), time_steps,
                          data_seconds=per_sample_data * t.batch_size * t.accumulate_steps, setup=setup)
    elif time_steps > 0:
        notes.append(f"time on this host: not measured (train.device is {t.device} and this host has no CUDA device)")
    if t.precision == "fp16" and precision != t.precision:
        timed = f"; the run itself, in {t.precision} on this CPU, would be slower than timed" if host is not None else ""
        notes.append(f"counted{' and timed' if host is not None else ''} in {precision}: {t.precision} autocast on a CPU is slow "
                     f"(the same FLOPs{', the same bytes' if precision == 'bf16' else ''}{timed})")

    peak = gpu_tflops if gpu_tflops is not None else GPU_PEAK_TFLOPS[t.precision]
    gpu_note = (f"{peak:g} TFLOP/s peak" if gpu_tflops is not None else
                f"{peak:g} TFLOP/s peak ({GPU_NAME} {t.precision}{', no TF32' if t.precision == 'fp32' else ''})")
    return Cost(
        name=cfg.name, parts=parts, buffer_values=buffer_values, views=views, batch_size=t.batch_size,
        accumulate_steps=t.accumulate_steps, world_size=world, max_steps=t.max_steps, precision=t.precision,
        optimizer=t.optimizer.type, counted_at=counted, count_device=str(device), flops_per_sample=float(flops[-1]),
        backbone_forward=tuple(forward), activation_fixed_bytes=fixed_act, activation_bytes_per_sample=per_sample_act,
        state_bytes=state, gpu_tflops=peak, gpu_util=gpu_util, gpu_note=gpu_note, host=host, notes=tuple(notes),
    )


def _time_host(model: Any, optim_wrapper: Any, items: list[dict[str, Any]], cfg: RunConfig, device: torch.device,
               probe: tuple[int, float], time_steps: int, *, data_seconds: float, setup: float) -> HostTime:
    """Time ``time_steps`` training steps at the config's batch, or at the largest divisor of it
    whose step takes at most :data:`_STEP_SECONDS`, scaled linearly. A CPU's time per sample falls
    steeply with the batch (4x from 4 to 128 for a ResNet-18 at 64 px), so the batch grows from
    ``probe`` (a batch and its step's seconds) step by step; each step is the next size's warm-up."""
    t = cfg.train
    batch, seconds = probe
    if seconds > _STEP_SECONDS:  # a paper preset on a CPU: the counted step is timing enough
        return _host_time(cfg, device, batch, 0, seconds, data_seconds=data_seconds, setup=setup)
    while batch < t.batch_size:
        larger = _larger_divisors(t.batch_size, batch)
        nxt = max([d for d in larger if d <= 2 * batch], default=larger[0])
        if seconds * nxt / batch > _STEP_SECONDS:
            break
        data = _batch(items, nxt)
        tick = time.perf_counter()
        model.train_step(data, optim_wrapper)  # new shapes: kernels chosen, buffers allocated
        _sync(device)
        batch, seconds = nxt, time.perf_counter() - tick
    data = _batch(items, batch)
    tick = time.perf_counter()
    for _ in range(time_steps):
        model.train_step(data, optim_wrapper)
    _sync(device)
    return _host_time(cfg, device, batch, time_steps, (time.perf_counter() - tick) / time_steps, data_seconds=data_seconds, setup=setup)


def _host_time(cfg: RunConfig, device: torch.device, batch: int, steps: int, seconds: float, *, data_seconds: float,
               setup: float) -> HostTime:
    """The run from one micro-step's ``seconds`` at ``batch``: scaled to the config's batch and
    micro-batches, with the data in the step (no worker, or no spare core for the workers) or beside it."""
    t = cfg.train
    step = seconds * t.batch_size / batch * t.accumulate_steps
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = torch.get_num_threads()
    overlaps = t.num_workers > 0 and (device.type == "cuda" or cores >= threads + t.num_workers)
    per_step = max(step, data_seconds / t.num_workers) if overlaps else step + data_seconds
    return HostTime(device=str(device), threads=threads, timed_batch=batch, timed_steps=steps, step_seconds=step,
                    data_seconds=data_seconds, data_overlaps=overlaps, setup_seconds=setup, run_seconds=setup + per_step * t.max_steps)


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _bytes(value: float) -> str:
    for factor, prefix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.0f} B"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{int(minutes)} min {int(seconds % 60)} s"
    hours = minutes / 60
    return f"{int(hours)} h {int(minutes % 60)} min" if hours < 48 else f"{hours / 24:.1f} days"


def format_cost(cost: Cost) -> str:
    """The ``--dry-run`` section: parameters, FLOPs, memory, time, with how each was obtained."""
    from facerep.describe import text_table

    rows = [(p.name, f"{p.total:,}", f"{p.trainable:,}") for p in cost.parts]
    rows.append(("all", f"{sum(p.total for p in cost.parts):,}", f"{sum(p.trainable for p in cost.parts):,}"))
    n = cost.batch_size * cost.accumulate_steps
    per = f"{n} samples: {cost.batch_size} x {cost.accumulate_steps} micro-batches" if cost.accumulate_steps > 1 else f"{n} samples"
    views = ", ".join(f"{c}x{h}x{w}" for c, h, w in cost.views)
    forward = ", ".join(f"{_si(f, 'FLOP')} at {side} px ({_si(f / 2, 'MAC')})" for side, f in cost.backbone_forward)
    lines = [
        f"cost of pretraining {cost.name} (facerep.cost; measured on the built model, {cost.count_device}):",
        "  parameters:",
        *("    " + line for line in text_table(rows, ("part", "total", "trainable")).splitlines()),
        f"    buffers (queues, norm statistics): {cost.buffer_values:,} values",
        f"  views of one sample: {len(cost.views)} ({views})",
        f"  backbone forward per image: {forward}",
        f"  training FLOPs per optimizer step: {_si(cost.step_flops, 'FLOP')} per process ({per}), "
        f"{_si(cost.global_step_flops, 'FLOP')} global ({cost.world_size} process{'es' if cost.world_size > 1 else ''}); "
        f"{cost.max_steps:,} steps: {_si(cost.run_flops, 'FLOP')}",
        f"    (torch.utils.flop_counter on one step at batch {cost.counted_at[-1]}, scaled linearly: forward + backward of "
        f"matmuls, convolutions and attention, 2 FLOPs per multiply-add; papers' \"FLOPs\" are multiply-adds, half of these)",
        f"  memory per process: activations {_bytes(cost.activation_bytes)} at batch {cost.batch_size} ({cost.precision}), "
        f"weights + gradients + {cost.optimizer} state {_bytes(cost.state_bytes)}",
        f"    (bytes autograd saves for backward at batches {' and '.join(map(str, cost.counted_at))}, extrapolated linearly; "
        f"the backward's transient buffers come on top)",
    ]
    h = cost.host
    if h is not None:
        data = (f"data {_duration(h.data_seconds)} per step {'beside' if h.data_overlaps else 'in turn with'} the step"
                if h.data_seconds else "no data time")
        timed = (f"{h.timed_steps} step{'s' if h.timed_steps > 1 else ''} timed after a warm-up step" if h.timed_steps else
                 "the counted step's time (slow steps are not timed again)")
        if h.timed_batch != cost.batch_size:
            timed += f", at batch {h.timed_batch}, scaled linearly: an upper bound, larger batches run faster"
        lines += [
            f"  time on this host ({h.device}, {h.threads} thread{'s' if h.threads > 1 else ''}): {_duration(h.run_seconds)} "
            f"for {cost.max_steps:,} steps",
            f"    ({_duration(h.step_seconds)} per step, {timed}; {data}; set-up {_duration(h.setup_seconds)})",
        ]
    lines.append(f"  time on a GPU of {cost.gpu_note} at {cost.gpu_util:.0%} of it: {_duration(cost.gpu_run_seconds)} "
                 f"({_duration(cost.gpu_step_seconds)} per step, one GPU per process; data loading not included)")
    lines += [f"  note: {n}" for n in cost.notes]
    return "\n".join(lines)
