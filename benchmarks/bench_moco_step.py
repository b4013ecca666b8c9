"""A full MoCo-v2 training step on a small ResNet: facerep's step vs the loop of lightly's MoCo example.

- facerep: ``MoCoV2Objective`` inside ``PretrainModel`` and its ``train_step`` with an mmengine
  ``OptimWrapper`` (what ``facerep run`` executes): uint8 views in, normalised on the device,
  channels_last model and inputs (the default), query forward with gradient, key forward without,
  InfoNCE against the queue, then (inside ``train_step``) the enqueue and, after the optimizer step,
  the momentum update; optionally under bf16 autocast
  (``train.precision: bf16``, the ``frl/moco_v2_tiny`` preset's precision) or with the backbones
  compiled (``train.compile``, whose first step, compile included, is reported beside the step time).
- lightly-style (lightly's ``examples/pytorch/moco.py``): ``update_momentum`` of backbone and
  projection head, ``query = projection_head(backbone(x_q))``, ``key = momentum copies(x_k)``,
  ``NTXentLoss(memory_bank_size=(K, d))``, ``backward``, ``optimizer.step``; the views arrive as the
  float32 normalised tensors lightly's transform produces.

Same backbone (one timm ResNet-18, weights copied), same projector (Linear-ReLU-Linear, 512-512-128),
same temperature and queue (lightly's memory bank is filled with facerep's queue), SGD on both.
Before timing, both losses are computed in eval mode (running batch-norm statistics) and must agree.
"""

from __future__ import annotations

import copy
import sys
import time

import torch
from _timing import Result, interleaved, result
from torch import nn

__all__ = ["MOCO_VARIANTS", "MoCoStepSetup", "bench_moco_step"]

MOCO_VARIANTS = ("fp32", "bf16", "fp32 NCHW", "fp32 compiled")


class _LightlyMoCo(nn.Module):
    """The model of lightly's MoCo example, on a given backbone."""

    def __init__(self, backbone: nn.Module, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(in_dim, hidden_dim, out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


class MoCoStepSetup:
    """Both models with equal weights and queues, their optimisers and one batch of two views."""

    def __init__(self, *, batch: int, size: int, queue_size: int, hidden_dim: int, out_dim: int,
                 facerep_variants: tuple[str, ...] = MOCO_VARIANTS, seed: int = 0, lightly: bool = True) -> None:
        from mmengine.optim import OptimWrapper

        from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
        from facerep.engine.model import PretrainModel, compile_backbones
        from facerep_frl.moco import MoCoV2Objective, MoCoV2Params

        torch.manual_seed(seed)
        params = MoCoV2Params(queue_size=queue_size, momentum=0.99, temperature=0.2, out_dim=out_dim, hidden_dim=hidden_dim,
                              view_size=size)
        backbone = TimmBackbone(TimmBackboneParams(model="resnet18"))
        objective = MoCoV2Objective(params, backbone=backbone)
        self.momentum = params.momentum
        if lightly:
            self._lightly_setup(objective, params, backbone, hidden_dim, out_dim)

        self.models = {}
        self.first_step_s: dict[str, float] = {}
        for variant in dict.fromkeys(("fp32", *facerep_variants)):  # fp32 is the one checked
            precision, channels_last = variant.split()[0], "NCHW" not in variant
            model = PretrainModel(copy.deepcopy(objective), precision=precision, channels_last=channels_last)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            if "compiled" in variant:
                compile_backbones(model.objective, warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))
            opt = OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
            self.models[variant] = (model, opt)

        g = torch.Generator().manual_seed(seed + 1)
        self.uint8_views = [torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g) for _ in range(2)]
        self.float_views = [backbone.preprocess(v) for v in self.uint8_views]  # what lightly's transform hands over

    def _lightly_setup(self, objective: nn.Module, params: object, backbone: nn.Module, hidden_dim: int, out_dim: int) -> None:
        from lightly.loss import NTXentLoss

        model = _LightlyMoCo(copy.deepcopy(backbone.model), backbone.embed_dim, hidden_dim, out_dim)
        with torch.no_grad():
            model.projection_head.layers.load_state_dict(objective.projector.state_dict())
            model.projection_head_momentum.load_state_dict(model.projection_head.state_dict())
        self.lightly_model = model
        self.lightly_loss = NTXentLoss(temperature=params.temperature, memory_bank_size=(params.queue_size, out_dim))
        with torch.no_grad():  # the same negatives: lightly's bank holds keys as rows
            self.lightly_loss.memory_bank.bank.copy_(objective.queue.T)
        self.lightly_opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def facerep_step(self, variant: str) -> torch.Tensor:
        model, opt = self.models[variant]
        t0 = time.perf_counter()
        loss = model.train_step({"views": self.uint8_views}, opt)["loss"]  # with the enqueue and the momentum update
        if "compiled" in variant and variant not in self.first_step_s:
            self.first_step_s[variant] = time.perf_counter() - t0
        return loss

    def lightly_step(self, bf16: bool = False) -> torch.Tensor:
        from lightly.models.utils import update_momentum

        m = self.lightly_model
        update_momentum(m.backbone, m.backbone_momentum, m=self.momentum)
        update_momentum(m.projection_head, m.projection_head_momentum, m=self.momentum)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
        with ctx:
            query = m(self.float_views[0])
            key = m.forward_momentum(self.float_views[1])
            loss = self.lightly_loss(query, key)
        loss.backward()
        self.lightly_opt.step()
        self.lightly_opt.zero_grad()
        return loss

    @torch.no_grad()
    def eval_losses(self) -> tuple[float, float]:
        """Both losses in eval mode (running batch-norm statistics), before any step; neither queue moves."""
        model, _ = self.models["fp32"]
        model.eval()
        self.lightly_model.eval()
        try:
            ours = float(model.objective(model.prepare({"views": self.uint8_views})[0]).loss)
            v = self.float_views
            theirs = float(self.lightly_loss(self.lightly_model(v[0]), self.lightly_model.forward_momentum(v[1])))
        finally:
            model.train()
            self.lightly_model.train()
        return ours, theirs


def bench_moco_step(setup: MoCoStepSetup, *, variants: list[tuple[str, str]], warmup: int, reps: int, shape: str) -> list[Result]:
    """One row per ``(facerep variant, lightly precision)`` pair; each distinct step timed once, all interleaved."""
    ours, theirs = setup.eval_losses()
    if abs(ours - theirs) > 1e-5 * max(1.0, abs(theirs)):
        raise AssertionError(f"MoCo-v2 step losses differ in eval mode: facerep {ours}, lightly-style {theirs}")
    check = f"eval-mode loss rel. diff {abs(ours - theirs) / abs(theirs):.1e}"
    fns = {}
    for fp, lp in variants:
        fns[f"facerep {fp}"] = lambda fp=fp: setup.facerep_step(fp)
        fns[f"lightly {lp}"] = lambda lp=lp: setup.lightly_step(lp == "bf16")
    times = interleaved(fns, warmup=warmup, reps=reps)
    rows = []
    for fp, lp in variants:
        name = f"MoCo-v2 train step, facerep {fp} vs lightly-style {lp}"
        layout = "NCHW (channels_last off)" if "NCHW" in fp else "channels_last"
        compiled = ", backbones compiled (train.compile; the first step compiles)" if "compiled" in fp else ""
        row_check = f"first step {setup.first_step_s[fp]:.1f} s (compile); {check}" if fp in setup.first_step_s else check
        note = (f"{name}: {shape}; facerep PretrainModel.train_step(MoCoV2Objective), {layout}{compiled}, "
                f"{'bf16 autocast' if fp.startswith('bf16') else 'fp32'} vs lightly's MoCo example loop (MoCoProjectionHead, "
                f"update_momentum, NTXentLoss with a memory bank), {'bf16 autocast' if lp == 'bf16' else 'fp32'}; SGD; "
                "same timm resnet18 weights, same queue")
        rows.append(result(name, "ms/step", (times[f"facerep {fp}"], times[f"lightly {lp}"]), check=row_check, note=note))
    return rows
