"""Reference numbers for ProS from DINO's official code, for ``plugins/facerep-pros/tests/test_official_reference.py``.

ProS (Di et al., WACV 2024) has no released code; its loss is DINO's with the prototypes made
explicit, so the reference is DINO: https://github.com/facebookresearch/dino at commit 7c446df
(2023-04-27). Used from it, unmodified: ``vision_transformer.py`` (``VisionTransformer`` with
``interpolate_pos_encoding``, ``DINOHead``), ``utils.py`` (``MultiCropWrapper``,
``get_params_groups``, ``cosine_scheduler``, ``clip_gradients``, ``cancel_gradients_last_layer``)
and ``main_dino.py`` (``DINOLoss`` and the whole ``train_one_epoch`` loop). Nothing of it is copied
here: the script imports it from a checkout.

Produced with (the checkout extracted file by file from the ``fetch`` snapshot; DINO needs nothing
beyond torch, torchvision and numpy, which the venv has)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/pros_reference.py \\
        --dino /work/official/dino --out plugins/facerep-pros/tests/reference/pros

Stubs (none touches the compared maths):

- ``Tensor.cuda`` / ``Module.cuda`` return themselves and ``torch.cuda.synchronize`` does nothing
  (CPU run; ``torch.cuda.amp.autocast(False)`` is the fp32 path of ``train_one_epoch``);
- a one-process gloo group: ``DINOLoss``'s ``dist.all_reduce`` of the centre and the student's
  ``DistributedDataParallel`` are the identity; ``MetricLogger``'s end-of-epoch sync (which builds a
  CUDA tensor, logging only) is skipped.

Tiny sizes (float32, CPU): batch 4; 2 global views of 32 px and 2 local views of 16 px, patch 8
(4 x 4 and 2 x 2 grids: the local crops' position embeddings go through DINO's
``interpolate_pos_encoding``, bicubic by scale factor 2.1 / 4, no antialiasing); DINO's ViT width 32,
depth 2, 2 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6 (``vit_tiny``/``vit_base``'s layout),
drop-path 0 (stochastic otherwise); DINO head 32-32-16 over 64 prototypes. Schedules per iteration
with one iteration per epoch, 8 epochs, 3 run: lr 0 -> 1e-3 (``--lr 0.064`` x 4 / 256, warm-up 3
epochs from 0), cosine to 5e-7 (min_lr / lr as DINO ViT-B's 1e-6 / 2e-3); wd 0.04 -> 0.4; tau_t
0.04 -> 0.07 over 3 epochs (the README's "boosting" recipe); prototypes frozen for 2 epochs; EMA
momentum 0.9 -> 1 (0.996 would move the teacher by 0.4 % of the student's change, too little to
test); ``norm_last_layer`` true (DINO ViT-B). The per-tensor clip is 0.5 so that it bites in every
step (31, 28, 13 of 37 tensors; step-0 gradient norms range from 0.1 to 3e3: ``head.mlp.4.bias`` feeds
the L2 normalisation of a tiny output). A smooth pattern (amplitude 0.05) is added to the initial
position embedding, so that resampling it for the local crops is not resampling noise.

The same 3 steps are also run in fp16 (``--use_fp16 true``: ``torch.cuda.amp.autocast`` and a
default ``GradScaler``), emulated on the CPU: ``torch.cuda.amp.autocast`` is replaced by
``torch.autocast("cpu", float16)`` and the scaler is ``torch.amp.GradScaler("cpu")`` (same calls and
defaults, the CPU autocast policy; no GPU here). With the default initial scale 2^16 the tiny model's
largest gradient (3.3e3) overflows in all 3 steps: each step is skipped and the scale halved, while
the EMA and the centre still move.

Also recorded: step 0 with ``norm_last_layer`` false (facerep ``learn_norm``), DINO's weight-decay
groups (names, both head variants) and the structure of DINO's ``vit_base`` (patch 16) that the
paper preset must rebuild with timm.

Written: ``<out>.safetensors`` (inputs, initial weights in facerep's names, step-0 logits, loss,
gradients, per-step losses, final student / teacher weights and centre, the schedules) and
``<out>.json`` (provenance, scalars, tolerances).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

B, GLOBAL, LOCAL, PATCH, N_LOCAL_VIEWS = 4, 32, 16, 8, 2
DIM, DEPTH, HEADS, MLP_RATIO = 32, 2, 2, 4
K, HIDDEN, BOTTLENECK = 64, 32, 16
EPOCHS, STEPS, WARMUP_EPOCHS, FREEZE_EPOCHS, TEMP_EPOCHS = 8, 3, 3, 2, 3
LR_ARG, MIN_LR, WD, WD_END, MOMENTUM = 0.064, 1e-3 * 1e-6 / 2e-3, 0.04, 0.4, 0.9
WARMUP_TEMP, TEMP = 0.04, 0.07
CLIP = 0.5  # per tensor: bites in all 3 steps (the head's tiny-width gradients reach 3e3, the LayerNorm weights' 0.1)
COMMIT = "7c446df"


def _stubs() -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
    if not torch.distributed.is_initialized():
        store = tempfile.NamedTemporaryFile(delete=False).name
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


def facerep_name(name: str, prefix: str = "") -> str:
    """DINO's ``MultiCropWrapper(VisionTransformer, DINOHead)`` names -> ProSObjective's. DINO's ViT
    and timm's share parameter names (``patch_embed.proj``, ``blocks.i.attn.qkv``, ``norm``...), so
    the backbone maps by prefix; ``last_layer.weight_v`` is the prototypes, ``weight_g`` the gain."""
    name = name.removeprefix("module.")
    if name.startswith("backbone."):
        return f"{prefix}backbone.model." + name.removeprefix("backbone.")
    if name.startswith("head.mlp."):
        return prefix + name
    table = {"head.last_layer.weight_v": "head.prototypes", "head.last_layer.weight_g": "head.gain"}
    if name not in table:
        raise KeyError(f"unmapped DINO parameter {name}")
    return prefix + table[name]


def facerep_names(state: dict[str, torch.Tensor], prefix: str = "", *, gain: bool = False) -> dict[str, torch.Tensor]:
    """A DINO state dict (or gradients) in ProSObjective's names; ``weight_g`` ``(K, 1)`` becomes the
    ``(K,)`` gain when ``gain`` (``norm_last_layer`` false), else it is dropped (fixed at 1)."""
    out = {}
    for name, t in state.items():
        new = facerep_name(name, prefix)
        if new.endswith("head.gain"):
            if not gain:
                continue
            t = t.reshape(-1)
        out[new] = t.detach().clone().contiguous()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dino", required=True, help="checkout of facebookresearch/dino at 7c446df")
    ap.add_argument("--out", required=True, help="output path without suffix")
    args = ap.parse_args()
    sys.path.insert(0, args.dino)
    _stubs()
    import main_dino
    import utils
    import vision_transformer as vits
    from vision_transformer import DINOHead

    utils.SmoothedValue.synchronize_between_processes = lambda self: None  # logging only; builds a CUDA tensor

    def vit():
        return vits.VisionTransformer(img_size=[GLOBAL], patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                                      mlp_ratio=MLP_RATIO, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                      drop_path_rate=0.0)

    def build(norm_last_layer=True):
        """Student (one-process DDP, as the official run) and teacher, from seed 0 (main_dino.py:166-213)."""
        torch.manual_seed(0)
        student = utils.MultiCropWrapper(vit(), DINOHead(DIM, K, use_bn=False, norm_last_layer=norm_last_layer, hidden_dim=HIDDEN,
                                                         bottleneck_dim=BOTTLENECK))
        teacher = utils.MultiCropWrapper(vit(), DINOHead(DIM, K, False, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK))
        with torch.no_grad():  # a smooth position embedding as after training (trunc_normal noise resamples to anything)
            n = GLOBAL // PATCH
            yy, xx = torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")
            freqs = torch.arange(1, DIM + 1).float() / DIM
            student.backbone.pos_embed[0, 1:] += 0.05 * (torch.sin(xx.reshape(-1, 1) * freqs * 1.3) + torch.cos(yy.reshape(-1, 1) * freqs))
        student = nn.parallel.DistributedDataParallel(student)
        teacher.load_state_dict(student.module.state_dict())  # main_dino.py:199
        for p in teacher.parameters():
            p.requires_grad = False
        return student, teacher

    # ---- fixed inputs: per step the augmented, normalised views (globals first)
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(STEPS):
        views = [torch.randn(B, 3, GLOBAL, GLOBAL, generator=g) for _ in range(2)]
        views += [torch.randn(B, 3, LOCAL, LOCAL, generator=g) for _ in range(N_LOCAL_VIEWS)]
        batches.append(views)

    def run(stu, tea, loss_fn, opt, epoch, clip, freeze, lr_s, wd_s, mom_s):
        ns = argparse.Namespace(epochs=EPOCHS, clip_grad=clip, freeze_last_layer=freeze)
        return main_dino.train_one_epoch(stu, tea, tea, loss_fn, [(batches[epoch], None)], opt, lr_s, wd_s, mom_s, epoch, None, ns)

    def dino_loss():
        return main_dino.DINOLoss(K, 2 + N_LOCAL_VIEWS, WARMUP_TEMP, TEMP, TEMP_EPOCHS, EPOCHS)

    lr_s = utils.cosine_scheduler(LR_ARG * B / 256.0, MIN_LR, EPOCHS, 1, warmup_epochs=WARMUP_EPOCHS)
    wd_s = utils.cosine_scheduler(WD, WD_END, EPOCHS, 1)
    mom_s = utils.cosine_scheduler(MOMENTUM, 1, EPOCHS, 1)

    def step0(norm_last_layer):
        """Step 0 of the official loop on a fresh copy, no clip, no freeze, lr 0: logits, loss, raw gradients."""
        stu, tea = build(norm_last_layer)
        captured = {}
        stu.module.head.register_forward_hook(lambda m, i, o: captured.__setitem__("student_logits", o.detach().clone()))
        tea.head.register_forward_hook(lambda m, i, o: captured.__setitem__("teacher_logits", o.detach().clone()))
        init = facerep_names(stu.state_dict(), gain=not norm_last_layer)
        opt = torch.optim.AdamW(utils.get_params_groups(stu))
        decayed = sorted(facerep_name(n) for n, p in stu.named_parameters() if any(p is q for q in opt.param_groups[0]["params"]))
        stats = run(stu, tea, dino_loss(), opt, 0, 0.0, 0, np.zeros(EPOCHS), wd_s, mom_s)
        grads = facerep_names({n: p.grad for n, p in stu.named_parameters() if p.grad is not None}, gain=True)
        return init, captured, stats["loss"], grads, decayed

    init, captured, loss0, grads, decayed = step0(True)
    init_ln, captured_ln, loss0_ln, grads_ln, decayed_ln = step0(False)
    norms = sorted(float(t.norm()) for t in grads.values() if t.ndim)
    clip = CLIP

    # ---- the 3-step trajectory: the official loop with clip, freeze, schedules, EMA, centre
    student, teacher = build(True)
    loss_fn = dino_loss()
    recorded = []
    clip_gradients = utils.clip_gradients

    def recording_clip(model, c):
        n = clip_gradients(model, c)
        recorded.append(sum(x > c for x in n))
        return n

    utils.clip_gradients = recording_clip
    optimizer = torch.optim.AdamW(utils.get_params_groups(student))
    losses, lrs, wds = [], [], []
    for epoch in range(STEPS):
        stats = run(student, teacher, loss_fn, optimizer, epoch, clip, FREEZE_EPOCHS, lr_s, wd_s, mom_s)
        losses.append(stats["loss"])
        lrs.append(stats["lr"])
        wds.append(stats["wd"])
    utils.clip_gradients = clip_gradients

    # ---- the same 3 steps in fp16 (--use_fp16 true: autocast + GradScaler, main_dino.py:222-224, 308-340),
    # CUDA's autocast and scaler emulated on the CPU (same calls, CPU autocast policy)
    cuda_autocast = torch.cuda.amp.autocast
    torch.cuda.amp.autocast = lambda enabled=True: torch.autocast("cpu", dtype=torch.float16, enabled=enabled)
    student16, teacher16 = build(True)
    loss_fn16, scaler = dino_loss(), torch.amp.GradScaler("cpu")
    optimizer16 = torch.optim.AdamW(utils.get_params_groups(student16))
    losses16, scales16 = [], []
    for epoch in range(STEPS):
        scales16.append(scaler.get_scale())
        ns = argparse.Namespace(epochs=EPOCHS, clip_grad=clip, freeze_last_layer=FREEZE_EPOCHS)
        stats = main_dino.train_one_epoch(student16, teacher16, teacher16, loss_fn16, [(batches[epoch], None)], optimizer16, lr_s, wd_s,
                                          mom_s, epoch, scaler, ns)
        losses16.append(stats["loss"])
    scales16.append(scaler.get_scale())
    torch.cuda.amp.autocast = cuda_autocast
    fresh = build(True)[0].state_dict().values()
    unchanged16 = all(torch.equal(a, b) for a, b in zip(student16.state_dict().values(), fresh, strict=True))

    # ---- DINO ViT-B/16 (main_dino.py:166-170 with --arch vit_base): what the paper preset rebuilds
    torch.manual_seed(0)
    vit_b = vits.vit_base(patch_size=16, drop_path_rate=0.1)
    released = {
        "shapes": {k: list(v.shape) for k, v in vit_b.state_dict().items()},
        "qkv_bias": vit_b.blocks[0].attn.qkv.bias is not None,
        "attention_scale": vit_b.blocks[0].attn.scale, "heads": vit_b.blocks[0].attn.num_heads,
        "layer_norm_eps": sorted({m.eps for m in vit_b.modules() if isinstance(m, nn.LayerNorm)}),
        "drop_path_rates": [float(b.drop_path.drop_prob) if hasattr(b.drop_path, "drop_prob") else 0.0 for b in vit_b.blocks],
        "pos_embed_std": float(vit_b.pos_embed.std()), "cls_token_std": float(vit_b.cls_token.std()),
    }
    head_b = DINOHead(768, 65536)
    released["prototype_row_norm"] = float(head_b.last_layer.weight_v.norm(dim=1).mean())
    del vit_b, head_b

    tensors = {"init/" + k: v for k, v in init.items()}
    tensors["init_learn_norm/head.gain"] = init_ln["head.gain"]
    for s, views in enumerate(batches):
        for v, x in enumerate(views):
            tensors[f"step{s}/view{v}"] = x.contiguous()
    for tag, cap in (("", captured), ("_learn_norm", captured_ln)):
        tensors[f"step0{tag}/student_logits"] = cap["student_logits"]
        tensors[f"step0{tag}/teacher_logits"] = cap["teacher_logits"]
    tensors.update({"grad/" + k: v for k, v in grads.items()})
    tensors.update({"grad_learn_norm/" + k: v for k, v in grads_ln.items()})
    tensors.update({"final/" + k: v for k, v in facerep_names(student.state_dict()).items()})
    tensors.update({"final/teacher_" + k: v for k, v in facerep_names(teacher.state_dict()).items()})
    tensors["final/centre"] = loss_fn.center.detach().clone()
    tensors["final_fp16/centre"] = loss_fn16.center.detach().clone()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    tensors["schedule/lr"] = torch.tensor(lr_s, dtype=torch.float64)
    tensors["schedule/weight_decay"] = torch.tensor(wd_s, dtype=torch.float64)
    tensors["schedule/momentum"] = torch.tensor(mom_s, dtype=torch.float64)
    tensors["schedule/teacher_temperature"] = torch.tensor(loss_fn.teacher_temp_schedule, dtype=torch.float64)

    from safetensors.torch import save_file

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out.with_suffix(".safetensors")))
    meta = {
        "repository": "https://github.com/facebookresearch/dino", "commit": COMMIT,
        "command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/pros_reference.py --dino /work/official/dino "
                   "--out plugins/facerep-pros/tests/reference/pros",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "numpy": np.__version__,
        "sizes": {"batch": B, "global_size": GLOBAL, "local_size": LOCAL, "patch": PATCH, "local_views": N_LOCAL_VIEWS, "dim": DIM,
                  "depth": DEPTH, "heads": HEADS, "mlp_ratio": MLP_RATIO, "prototypes": K, "hidden": HIDDEN, "bottleneck": BOTTLENECK},
        "recipe": {"epochs": EPOCHS, "iterations_per_epoch": 1, "steps_run": STEPS, "lr_arg": LR_ARG, "lr_reference_batch": 256,
                   "peak_lr": LR_ARG * B / 256.0, "min_lr": MIN_LR, "warmup_epochs": WARMUP_EPOCHS, "weight_decay": WD,
                   "weight_decay_end": WD_END, "momentum_teacher": MOMENTUM, "freeze_last_layer": FREEZE_EPOCHS,
                   "warmup_teacher_temp": WARMUP_TEMP, "teacher_temp": TEMP, "warmup_teacher_temp_epochs": TEMP_EPOCHS,
                   "student_temp": 0.1, "center_momentum": 0.9, "clip_grad": clip, "clip_per_tensor": True, "norm_last_layer": True},
        "decayed": decayed, "decayed_learn_norm": decayed_ln,
        "released_vit": released,
        "step0_loss": loss0, "step0_loss_learn_norm": loss0_ln, "losses": losses, "lrs": lrs, "wds": wds,
        "fp16": {"losses": losses16, "loss_scale_before_each_step_and_after": scales16,
                 "student_unchanged": unchanged16,
                 "emulation": "torch.cuda.amp.autocast -> torch.autocast('cpu', float16); GradScaler('cpu')"},
        "clip": {"value": clip, "tensors": len(norms), "tensors_clipped_per_step": [int(x) for x in recorded],
                 "step0_norm_range": [norms[0], norms[-1]]},
        "tolerances": {
            "logits": "abs 1e-5 (float32 forward, values ~0.1-1; timm's fused attention vs DINO's explicit softmax)",
            "loss": "rel 1e-5",
            "gradients": "abs 1e-5 x the tensor's max |grad| (float32 summation order)",
            "trajectory": "losses rel 1e-5; student / teacher weights abs 1e-5 after 3 AdamW steps at lr <= 1e-3 (Adam's "
                          "division by sqrt(v) can amplify float32 noise in near-zero gradients up to ~lr); centre abs 1e-6",
            "fp16": "losses rel 2e-3, centre abs 5e-4 (fp16 autocast: timm's fused attention vs DINO's explicit softmax; "
                    "measured 6e-4 and 4.9e-5); the loss scale exactly",
        },
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({k: meta[k] for k in ("step0_loss", "step0_loss_learn_norm", "losses", "lrs", "clip")}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
