"""Does bf16 autocast learn like fp32? The same SwAV run twice, loss curves compared.

The training-step rows time facerep's bf16 step against fp32 ones; a faster step is only worth
having if it learns the same. This runs the configuration of the step benchmark (timm ResNet-18,
2x64 + 4x32 crops, projector 512-512-128, K=300, SGD) for ``steps`` steps from the same initial
weights on the same batches, once in fp32 and once under bf16 autocast (``train.precision: bf16``),
and compares the two loss curves:

- ``diff``: the mean absolute difference of their ``window``-step moving averages;
- ``noise``: the step-to-step noise of the fp32 curve, the standard deviation of its residual
  around its own moving average (what one step's loss scatters by, batch to batch).

The criterion is ``diff <= noise``: over the run, the bf16 curve is closer to the fp32 one than
one fp32 step is to its neighbours. Both numbers are reported, with the moving averages at the
start and the end (that the loss falls at all is part of the check: two flat curves would agree
trivially).

Data: the cartoon faces of ``core.synthetic`` (``facerep.data.synthetic``; not real data, a
stand-in with structure: identities, poses, expressions), 80 px, cut into SwAV's multi-crop views by
the objective's own ``MultiCropViews`` with seeded per-sample generators, as ``facerep run`` does;
batch ``i`` is the same for both runs. The two steps of a batch run one after the other, so load
changes hit both alike, and their times give a bf16 / fp32 step-time ratio from this run too.
Higher learning rate than the step benchmark (0.05 vs 1e-3) so that 200 steps move the loss.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import attrs
import numpy as np
import torch

__all__ = ["CurveCheck", "bench_bf16_curve"]


@attrs.define
class CurveCheck:
    """One line of the "Checks" table."""

    name: str
    diff: float
    noise: float
    start: tuple[float, float]  # first moving average, fp32 / bf16
    end: tuple[float, float]  # last moving average, fp32 / bf16
    step_ratio: float  # fp32 step time / bf16 step time (medians), from the same run
    note: str
    fp32_losses: list[float] = attrs.field(factory=list)
    bf16_losses: list[float] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return self.diff <= self.noise

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "ok": self.ok}

    def markdown_row(self) -> str:
        return (f"| {self.name} | {self.diff:.4f} | {self.noise:.4f} | {'yes' if self.ok else 'NO'} | "
                f"{self.start[0]:.3f} / {self.start[1]:.3f} | {self.end[0]:.3f} / {self.end[1]:.3f} | {self.step_ratio:.2f} |")


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    return np.convolve(x, np.ones(window) / window, mode="valid")


def compare_curves(fp32: list[float], bf16: list[float], window: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``(diff, noise, ma_fp32, ma_bf16)`` as defined in the module docstring."""
    a, b = np.asarray(fp32, dtype=np.float64), np.asarray(bf16, dtype=np.float64)
    ma_a, ma_b = _moving_average(a, window), _moving_average(b, window)
    diff = float(np.abs(ma_a - ma_b).mean())
    # residual of each step around the centred moving average of its window
    centre = a[window // 2 : window // 2 + len(ma_a)]
    noise = float(np.std(centre - ma_a))
    return diff, noise, ma_a, ma_b


class _Batches:
    """Batch ``i``: ``batch`` pre-rendered synthetic faces, in a seeded order, cut into views."""

    def __init__(self, transform, *, batch: int, image_size: int, n_images: int, seed: int) -> None:
        from facerep.data.synthetic import SyntheticFaces

        faces = SyntheticFaces(n=n_images, size=image_size, n_identities=max(1, n_images // 8), seed=seed)
        self.samples = [faces[i] for i in range(n_images)]
        self.transform = transform
        self.batch = batch
        self.seed = seed

    def __call__(self, i: int) -> dict[str, list[torch.Tensor]]:
        order = np.random.default_rng([self.seed, 0, i]).choice(len(self.samples), self.batch, replace=False)
        per_sample = [self.transform(self.samples[j], np.random.default_rng([self.seed, 1, i, int(j)])) for j in order]
        views = [torch.from_numpy(np.ascontiguousarray(np.stack([s[v] for s in per_sample]).transpose(0, 3, 1, 2)))
                 for v in range(len(per_sample[0]))]
        return {"views": views}


def bench_bf16_curve(*, batch: int, steps: int, window: int, lr: float = 0.05, seed: int = 0) -> CurveCheck:
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.engine.model import PretrainModel
    from facerep_frl.swav import SwAVObjective, SwAVParams

    torch.manual_seed(seed)
    params = SwAVParams(n_prototypes=300, out_dim=128, hidden_dim=512, freeze_prototypes_steps=0, global_crops=2, global_size=64,
                        local_crops=4, local_size=32)
    objective = SwAVObjective(params, backbone=TimmBackbone(TimmBackboneParams(model="resnet18")))
    batches = _Batches(objective.view_transform(), batch=batch, image_size=80, n_images=max(512, 4 * batch), seed=seed)
    runs = {}
    for precision in ("fp32", "bf16"):  # same initial weights, channels_last (facerep's default) for both
        model = PretrainModel(copy.deepcopy(objective), precision=precision, channels_last=True).to(memory_format=torch.channels_last)
        runs[precision] = (model, OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-6)))
    hub = MessageHub.get_current_instance()
    hub.update_info("max_iters", steps)
    losses: dict[str, list[float]] = {p: [] for p in runs}
    times: dict[str, list[float]] = {p: [] for p in runs}
    for i in range(steps):
        data = batches(i)
        hub.update_info("iter", i)
        order = list(runs) if i % 2 == 0 else list(runs)[::-1]  # alternate which precision goes first
        for precision in order:
            model, opt = runs[precision]
            t0 = time.perf_counter()
            loss = model.train_step(data, opt)["loss"]
            times[precision].append(time.perf_counter() - t0)
            losses[precision].append(float(loss))
    diff, noise, ma_a, ma_b = compare_curves(losses["fp32"], losses["bf16"], window)
    name = f"SwAV bf16 vs fp32 loss curve, {steps} steps, batch {batch}"
    skip = min(2, steps - 1)  # the first steps include lazy initialisation (oneDNN primitives)
    ratio = statistics.median(times["fp32"][skip:]) / statistics.median(times["bf16"][skip:])
    note = (f"{name}: timm resnet18, 2x64 + 4x32 crops of 80 px synthetic faces (MultiCropViews), projector 512-512-128, K=300, "
            f"SGD lr {lr} momentum 0.9, same seed, initial weights and batches; diff = mean |MA{window}(bf16) - MA{window}(fp32)|, "
            f"noise = std of the fp32 losses around their MA{window}; pass if diff <= noise")
    return CurveCheck(name=name, diff=diff, noise=noise, start=(float(ma_a[0]), float(ma_b[0])), end=(float(ma_a[-1]), float(ma_b[-1])),
                      step_ratio=ratio, note=note, fp32_losses=losses["fp32"], bf16_losses=losses["bf16"])
