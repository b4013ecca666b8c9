"""A full SwAV training step on a small ResNet: facerep's step vs the loop of lightly's SwaV example.

- facerep: ``SwAVObjective`` inside ``PretrainModel`` and its ``train_step`` with an mmengine
  ``OptimWrapper`` (what ``facerep run`` executes): uint8 crops in, normalised on the device,
  channels_last model and inputs (``train.channels_last``, the default), one backbone forward per
  run of same-size crops and one projector forward on all crops (as SwAV's own code), optionally
  under bf16 autocast (``train.precision: bf16``).
- lightly-style: ``backbone -> SwaVProjectionHead -> normalize -> SwaVPrototypes`` applied to each
  crop separately, ``prototypes.normalize()`` before the forward and ``SwaVLoss`` on the high- and
  low-resolution outputs, then ``backward`` and ``optimizer.step`` (lightly's examples); the crops
  arrive as the float32 normalised tensors lightly's transform produces.

Same backbone (one timm ResNet-18, weights copied), same head sizes, SGD on both. By design the
batch-norm statistics differ in training mode (per crop for lightly's loop, per group of same-size
crops in facerep's backbone, over all crops in its projector), so the losses are compared in eval
mode, where batch norm uses running statistics and both compute the same function.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from _timing import Result, paired, result

__all__ = ["SwAVStepSetup", "bench_swav_step"]


class _LightlySwaV(nn.Module):
    def __init__(self, backbone: nn.Module, in_dim: int, hidden_dim: int, out_dim: int, n_protos: int) -> None:
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

        super().__init__()
        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(in_dim, hidden_dim, out_dim)
        self.prototypes = SwaVPrototypes(out_dim, n_prototypes=n_protos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.projection_head(self.backbone(x).flatten(start_dim=1)), dim=1)
        return self.prototypes(z)


class SwAVStepSetup:
    """Both models with equal weights, their optimisers and one batch of crops."""

    def __init__(self, *, batch: int, global_size: int, n_global: int, local_size: int, n_local: int, n_protos: int, hidden_dim: int,
                 out_dim: int, seed: int = 0) -> None:
        from lightly.loss import SwaVLoss
        from mmengine.optim import OptimWrapper

        from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
        from facerep.engine.model import PretrainModel
        from facerep_frl.swav import SwAVObjective, SwAVParams

        torch.manual_seed(seed)
        self.n_global = n_global
        params = SwAVParams(
            n_prototypes=n_protos, out_dim=out_dim, hidden_dim=hidden_dim, freeze_prototypes_steps=0, global_crops=n_global,
            global_size=global_size, local_crops=n_local, local_size=local_size,
        )
        backbone = TimmBackbone(TimmBackboneParams(model="resnet18"))
        objective = SwAVObjective(params, backbone=backbone)
        lightly_model = _LightlySwaV(copy.deepcopy(backbone.model), backbone.embed_dim, hidden_dim, out_dim, n_protos)
        # same head weights: lightly's first Linear has no bias (batch norm follows), its prototypes have one
        with torch.no_grad():
            objective.projector[0].bias.zero_()
            lightly_model.projection_head.layers.load_state_dict(objective.projector.state_dict(), strict=False)
            lightly_model.prototypes.heads[0].weight.copy_(objective.prototypes.weight)
            lightly_model.prototypes.heads[0].bias.zero_()
        self.lightly_model = lightly_model
        self.lightly_loss = SwaVLoss(temperature=params.temperature, sinkhorn_iterations=params.sinkhorn_iters, sinkhorn_epsilon=params.eps)
        self.lightly_opt = torch.optim.SGD(lightly_model.parameters(), lr=1e-3, momentum=0.9)

        self.models = {}
        for precision in ("fp32", "bf16"):
            obj = copy.deepcopy(objective)
            model = PretrainModel(obj, precision=precision, channels_last=True).to(memory_format=torch.channels_last)
            opt = OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
            self.models[precision] = (model, opt)

        g = torch.Generator().manual_seed(seed + 1)
        sizes = [global_size] * n_global + [local_size] * n_local
        self.uint8_views = [torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g) for s in sizes]
        self.float_views = [backbone.preprocess(v) for v in self.uint8_views]  # what lightly's transform hands over

    # --- the steps ----------------------------------------------------------------------------

    def facerep_step(self, precision: str) -> torch.Tensor:
        model, opt = self.models[precision]
        return model.train_step({"views": self.uint8_views}, opt)["loss"]

    def lightly_step(self, bf16: bool = False) -> torch.Tensor:
        m = self.lightly_model
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
        with ctx:
            m.prototypes.normalize()
            outs = [m(v) for v in self.float_views]
            loss = self.lightly_loss(outs[: self.n_global], outs[self.n_global :])
        loss.backward()
        self.lightly_opt.step()
        self.lightly_opt.zero_grad()
        return loss

    # --- the check ----------------------------------------------------------------------------

    @torch.no_grad()
    def eval_losses(self) -> tuple[float, float]:
        """Both losses in eval mode (running batch-norm statistics), before any step."""
        model, _ = self.models["fp32"]
        model.eval()
        self.lightly_model.eval()
        try:
            ours = float(model.objective(model.prepare({"views": self.uint8_views})).loss)
            self.lightly_model.prototypes.normalize()
            outs = [self.lightly_model(v) for v in self.float_views]
            theirs = float(self.lightly_loss(outs[: self.n_global], outs[self.n_global :]))
        finally:
            model.train()
            self.lightly_model.train()
        return ours, theirs


def bench_swav_step(setup: SwAVStepSetup, *, label: str, facerep_precision: str, lightly_bf16: bool, warmup: int, reps: int,
                    check: str, shape: str) -> Result:
    times = paired(lambda: setup.facerep_step(facerep_precision), lambda: setup.lightly_step(lightly_bf16), warmup=warmup, reps=reps)
    lightly_prec = "bf16 autocast" if lightly_bf16 else "fp32"
    name = f"SwAV train step, facerep {facerep_precision} vs lightly-style {'bf16' if lightly_bf16 else 'fp32'}"
    note = (f"{label}: {shape}; facerep PretrainModel.train_step(SwAVObjective), channels_last, {facerep_precision}"
            f"{' autocast' if facerep_precision == 'bf16' else ''}, grouped crops vs lightly-style loop (SwaVProjectionHead, "
            f"SwaVPrototypes, SwaVLoss, one forward per crop), {lightly_prec}; SGD, 2 threads")
    return result(name, "ms/step", times, check=check, note=note)
