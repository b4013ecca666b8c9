"""A full SwAV training step on a small ResNet: facerep's step vs the loop of lightly's SwaV example.

- facerep: ``SwAVObjective`` inside ``PretrainModel`` and its ``train_step`` with an mmengine
  ``OptimWrapper`` (what ``facerep run`` executes): uint8 crops in, normalised on the device,
  channels_last model and inputs (``train.channels_last``, the default), one backbone forward per
  run of same-size crops and one projector forward on all crops (as SwAV's own code), optionally
  under bf16 autocast (``train.precision: bf16``); "compiled" variants with the backbone compiled
  by ``train.compile`` (``facerep.engine.model.compile_backbones``: inductor, static shapes, one
  compile per crop size), whose first step, compile included, is reported beside the step time.
- lightly-style: ``backbone -> SwaVProjectionHead -> normalize -> SwaVPrototypes`` applied to each
  crop separately, ``prototypes.normalize()`` before the forward and ``SwaVLoss`` on the high- and
  low-resolution outputs, then ``backward`` and ``optimizer.step`` (lightly's examples); the crops
  arrive as the float32 normalised tensors lightly's transform produces.

Same backbone (one timm ResNet-18, weights copied), same head sizes, SGD on both. By design the
batch-norm statistics differ in training mode (per crop for lightly's loop, per group of same-size
crops in facerep's backbone, over all crops in its projector), so the losses are compared in eval
mode, where batch norm uses running statistics and both compute the same function.

Without lightly installed, ``python benchmarks/bench_train_step.py`` times facerep's variants
alone (eager vs compiled, fp32 and bf16) at the same shape.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from _timing import Result, interleaved, result
from torch import nn

__all__ = ["FACEREP_VARIANTS", "SwAVStepSetup", "bench_facerep_variants", "bench_swav_step"]

FACEREP_VARIANTS = ("fp32", "bf16", "fp32 NCHW", "fp32 compiled", "bf16 compiled")


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
                 out_dim: int, facerep_variants: tuple[str, ...] = FACEREP_VARIANTS, seed: int = 0, lightly: bool = True) -> None:
        from mmengine.optim import OptimWrapper

        from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
        from facerep.engine.model import PretrainModel, compile_backbones
        from facerep_frl.swav import SwAVObjective, SwAVParams

        torch.manual_seed(seed)
        self.n_global = n_global
        params = SwAVParams(
            n_prototypes=n_protos, out_dim=out_dim, hidden_dim=hidden_dim, freeze_prototypes_steps=0, global_crops=n_global,
            global_size=global_size, local_crops=n_local, local_size=local_size,
        )
        backbone = TimmBackbone(TimmBackboneParams(model="resnet18"))
        objective = SwAVObjective(params, backbone=backbone)
        with torch.no_grad():  # lightly's first Linear has no bias (batch norm follows)
            objective.projector[0].bias.zero_()
        if lightly:
            self._lightly_setup(objective, params, backbone, hidden_dim, out_dim, n_protos)

        # "fp32" / "bf16": channels_last (facerep's default); "fp32 NCHW": without it; "... compiled": train.compile
        self.models = {}
        self.first_step_s: dict[str, float] = {}  # compiled variants: their first step, compile included
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
        sizes = [global_size] * n_global + [local_size] * n_local
        self.uint8_views = [torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g) for s in sizes]
        self.float_views = [backbone.preprocess(v) for v in self.uint8_views]  # what lightly's transform hands over

    def _lightly_setup(self, objective: nn.Module, params: object, backbone: nn.Module, hidden_dim: int, out_dim: int,
                       n_protos: int) -> None:
        from lightly.loss import SwaVLoss

        lightly_model = _LightlySwaV(copy.deepcopy(backbone.model), backbone.embed_dim, hidden_dim, out_dim, n_protos)
        with torch.no_grad():  # same head weights: lightly's prototypes have a bias, zeroed
            lightly_model.projection_head.layers.load_state_dict(objective.projector.state_dict(), strict=False)
            lightly_model.prototypes.heads[0].weight.copy_(objective.prototypes.weight)
            lightly_model.prototypes.heads[0].bias.zero_()
        self.lightly_model = lightly_model
        self.lightly_loss = SwaVLoss(temperature=params.temperature, sinkhorn_iterations=params.sinkhorn_iters, sinkhorn_epsilon=params.eps)
        self.lightly_opt = torch.optim.SGD(lightly_model.parameters(), lr=1e-3, momentum=0.9)

    # --- the steps ----------------------------------------------------------------------------

    def facerep_step(self, variant: str) -> torch.Tensor:
        model, opt = self.models[variant]
        if "compiled" in variant and variant not in self.first_step_s:
            t0 = time.perf_counter()
            loss = model.train_step({"views": self.uint8_views}, opt)["loss"]
            self.first_step_s[variant] = time.perf_counter() - t0
            return loss
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
            ours = float(model.objective(model.prepare({"views": self.uint8_views})[0]).loss)
            self.lightly_model.prototypes.normalize()
            outs = [self.lightly_model(v) for v in self.float_views]
            theirs = float(self.lightly_loss(outs[: self.n_global], outs[self.n_global :]))
        finally:
            model.train()
            self.lightly_model.train()
        return ours, theirs


def bench_swav_step(setup: SwAVStepSetup, *, variants: list[tuple[str, str]], warmup: int, reps: int, shape: str) -> list[Result]:
    """One row per ``(facerep precision, lightly precision)`` pair; each distinct step is timed
    once, all of them interleaved."""
    ours, theirs = setup.eval_losses()
    if abs(ours - theirs) > 1e-5 * max(1.0, abs(theirs)):
        raise AssertionError(f"SwAV step losses differ in eval mode: facerep {ours}, lightly-style {theirs}")
    check = f"eval-mode loss rel. diff {abs(ours - theirs) / abs(theirs):.1e}"
    fns = {}
    for fp, lp in variants:
        fns[f"facerep {fp}"] = lambda fp=fp: setup.facerep_step(fp)
        fns[f"lightly {lp}"] = lambda lp=lp: setup.lightly_step(lp == "bf16")
    times = interleaved(fns, warmup=warmup, reps=reps)
    rows = []
    for fp, lp in variants:
        name = f"SwAV train step, facerep {fp} vs lightly-style {lp}"
        layout = "NCHW (channels_last off)" if "NCHW" in fp else "channels_last"
        compiled = ", backbone compiled (train.compile; the first step compiles)" if "compiled" in fp else ""
        row_check = f"first step {setup.first_step_s[fp]:.1f} s (compile); {check}" if fp in setup.first_step_s else check
        note = (f"{name}: {shape}; facerep PretrainModel.train_step(SwAVObjective), {layout}{compiled}, "
                f"{'bf16 autocast' if fp.startswith('bf16') else 'fp32'}, one backbone forward per crop size vs a lightly-style loop "
                f"(SwaVProjectionHead, SwaVPrototypes, SwaVLoss, one forward per crop), {'bf16 autocast' if lp == 'bf16' else 'fp32'}; "
                "SGD; same timm resnet18 weights")
        rows.append(result(name, "ms/step", (times[f"facerep {fp}"], times[f"lightly {lp}"]), check=row_check, note=note))
    return rows


def bench_facerep_variants(setup: SwAVStepSetup, *, variants: tuple[str, ...], warmup: int,
                           reps: int) -> dict[str, tuple[float, float | None]]:
    """facerep's variants alone (no lightly), interleaved: ``{variant: (median s/step, first step s of a compiled one)}``."""
    times = interleaved({v: lambda v=v: setup.facerep_step(v) for v in variants}, warmup=warmup, reps=reps)
    return {v: (statistics.median(times[v]), setup.first_step_s.get(v)) for v in variants}


if __name__ == "__main__":  # facerep-only: eager vs compiled at the run.py full pass's shape
    import argparse

    ap = argparse.ArgumentParser(description="SwAV train step, facerep variants only (eager vs train.compile)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--variants", nargs="+", default=["fp32", "fp32 compiled", "bf16", "bf16 compiled"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    setup = SwAVStepSetup(batch=args.batch, global_size=64, n_global=2, local_size=32, n_local=4, n_protos=300, hidden_dim=512, out_dim=128,
                          facerep_variants=tuple(args.variants), lightly=False)
    out = bench_facerep_variants(setup, variants=tuple(args.variants), warmup=args.warmup, reps=args.reps)
    print(f"timm resnet18, batch {args.batch}, 2x64 + 4x32 crops, projector 512-512-128, K=300; {args.threads} threads; torch "
          f"{torch.__version__}; {time.perf_counter() - t0:.0f} s")
    print("| variant | ms/step (median) | first step, compile included (s) |\n|---|---:|---:|")
    for v, (med, first) in out.items():
        print(f"| {v} | {med * 1e3:.0f} | {'' if first is None else f'{first:.1f}'} |")
