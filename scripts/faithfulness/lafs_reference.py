"""Reference numbers for LAFS from the official code, for ``plugins/facerep-lafs/tests/test_official_reference.py``.

Official repository: https://github.com/szlbiubiubiu/LAFS_CVPR2024 at commit 320c57d (2024-11-14).
Used from it, unmodified: ``face_pre_pro/ViT_face.py`` (``ViT_face_landmark_patch8``, the landmark
ViT LAFS pretrains, and ``extract_patches_pytorch_gridsample``), ``vision_transformer.py``
(``DINOHead``), ``utils.py`` (``MultiCropWrapper``, ``get_params_groups``, ``cosine_scheduler``,
``clip_gradients``, ``cancel_gradients_last_layer``) and ``lafs_train.py`` (``DINOLoss`` and the
whole ``train_one_epoch`` loop). Nothing of it is copied here: the script imports it from a checkout.

Produced with (paths are arguments; the checkout extracted file by file from the ``fetch`` snapshot,
the two pip packages the official files import installed with ``pip install --target``)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/lafs_reference.py \\
        --lafs /work/official/lafs --site /work/official/site-lafs \\
        --out plugins/facerep-lafs/tests/reference/lafs

Stubs (none touches the compared maths):

- ``IPython`` (``ViT_face.py`` imports ``embed``, a debugger hook) is an empty module;
- ``Tensor.cuda`` returns the tensor and ``torch.cuda.synchronize`` does nothing (CPU run);
- a one-process gloo group: ``DINOLoss``'s ``dist.all_reduce`` of the centre and the student's
  ``DistributedDataParallel`` are the identity; ``MetricLogger``'s end-of-epoch sync (which builds a
  CUDA tensor, logging only) is skipped;
- the landmark CNN: ``train_one_epoch`` calls the stage-1 landmark network (weights on Google Drive)
  for the points and the patches. It is replaced by an object with the same call signature that
  returns fixed points and the official ``extract_patches_pytorch_gridsample`` of the augmented image
  at them (what the real one does after predicting its points, ``ViT_face.py:1403-1408``).

Tiny sizes (float32, CPU): batch 4; 2 global views with 49 points (the official patch extraction
tiles the patches into a square, so counts must be squares) and 2 local views with 36 (hard-coded in
``train_one_epoch``, ``lafs_train.py:568``), 8 x 8 patches in 32 px images; ViT width 32, depth 2,
3 heads x 8 (attention width 24 != 32, as LAFS's 11 x 64 != 768), MLP 64, dropout and drop-path 0
(stochastic otherwise; the official teacher is never put in eval mode, so they would also act on its
targets); DINO head 32-32-16 over 64 prototypes. Schedules per iteration with one iteration per
epoch: lr 0 -> 1e-3 (``--lr 0.064`` x 4 / 256; warm-up 2 epochs: the official warm-up starts at 0),
cosine to 3.125e-6 (min_lr / lr as the paper preset's 1e-6 / 3.2e-4); wd 0.04 -> 0.4; tau_t
0.07 -> 0.04 over 3 epochs; prototypes frozen for 2 epochs; EMA momentum 0.9 -> 1 (0.996 would move
the teacher by 0.4 % of the student's change, too little to test); 6 epochs, 3 run. The per-tensor
clip is set to the median step-0 gradient norm so that it bites (about half the tensors are scaled).

Facerep coordinates: pixel (x, y) of pixel centres. The official patch sampling is centred 1 px up
and left of the given point (``(point + a) / (W / 2) - 1`` with ``a`` in -4..3 and
``align_corners=False`` samples ``point - 4.5 .. point + 2.5``), so the official code is given the
points + 1 px; its patch tokens are laid out (x, y, channel), facerep's (channel, y, x): the initial
``patch_to_embedding`` weight is stored with its input columns permuted to facerep's layout.

Written: ``<out>.safetensors`` (inputs, initial weights in facerep's names, step-0 logits, loss,
gradients, per-step losses, final student / teacher weights and centre) and ``<out>.json`` (provenance,
scalars, tolerances).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

B, SIZE, PATCH, N_GLOBAL, N_LOCAL, N_LOCAL_VIEWS = 4, 32, 8, 49, 36, 2
DIM, DEPTH, HEADS, HEAD_DIM, MLP = 32, 2, 3, 8, 64
K, HIDDEN, BOTTLENECK = 64, 32, 16
EPOCHS, STEPS, WARMUP_EPOCHS, FREEZE_EPOCHS, TEMP_EPOCHS = 6, 3, 2, 2, 3
LR_ARG, MIN_LR, WD, WD_END, MOMENTUM = 0.064, 1e-3 * 1e-6 / 3.2e-4, 0.04, 0.4, 0.9
COMMIT = "320c57d"


def _stubs() -> None:
    sys.modules.setdefault("IPython", types.ModuleType("IPython")).embed = lambda *a, **k: None
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
    if not torch.distributed.is_initialized():
        store = tempfile.NamedTemporaryFile(delete=False).name
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


class _LandmarkCNN:
    """Stands in for the stage-1 landmark network in ``train_one_epoch``: the next fixed points, and
    the official patch extraction from the augmented image at them."""

    patch_size = PATCH

    def __init__(self, extract) -> None:
        self.extract, self.queue = extract, []

    def __call__(self, x, x_Aug=None, **kwargs):
        theta = self.queue.pop(0)
        return theta, self.extract(x_Aug, theta, patch_shape=torch.tensor([PATCH, PATCH]), num_landm=theta.shape[1])


def _facerep_names(state: dict[str, torch.Tensor], prefix: str, depth: int = DEPTH, patch: int = PATCH) -> dict[str, torch.Tensor]:
    """Official ``MultiCropWrapper(ViT_face_landmark_patch8, DINOHead)`` names -> LAFSObjective's."""
    out = {}
    for name, t in state.items():
        name = name.removeprefix("module.")
        if name.endswith("weight_g"):
            continue  # fixed at 1 (norm_last_layer)
        b, h = f"{prefix}backbone.", f"{prefix}head."
        rules = [("backbone.pos_embedding", b + "pos_embed"), ("backbone.cls_token", b + "cls_token"),
                 ("backbone.patch_to_embedding.", b + "patch_embed."), ("backbone.mlp_head.0.", b + "norm."),
                 ("head.last_layer.weight_v", h + "prototypes"), ("head.mlp.", h + "mlp.")]
        for i in range(depth):
            layer = f"backbone.transformer.layers.{i}."
            rules += [(layer + "0.fn.norm.", f"{b}blocks.{i}.norm1."), (layer + "0.fn.fn.to_qkv.", f"{b}blocks.{i}.attn.qkv."),
                      (layer + "0.fn.fn.to_out.0.", f"{b}blocks.{i}.attn.proj."), (layer + "1.fn.norm.", f"{b}blocks.{i}.norm2."),
                      (layer + "1.fn.fn.net.0.", f"{b}blocks.{i}.mlp.fc1."), (layer + "1.fn.fn.net.3.", f"{b}blocks.{i}.mlp.fc2.")]
        for old, new in rules:
            if name.startswith(old):
                new_name = new + name[len(old):]
                break
        else:
            raise KeyError(f"unmapped official parameter {name}")
        if new_name.endswith("patch_embed.weight"):  # input columns (x, y, c) -> (c, y, x)
            t = t.reshape(t.shape[0], patch, patch, 3).permute(0, 3, 2, 1).reshape(t.shape[0], -1)
        out[new_name] = t.detach().clone().contiguous()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lafs", required=True, help="checkout of szlbiubiubiu/LAFS_CVPR2024 at 320c57d")
    ap.add_argument("--site", required=True, help="pip --target folder with einops and warmup-scheduler")
    ap.add_argument("--out", required=True, help="output path without suffix")
    args = ap.parse_args()
    sys.path[:0] = [args.lafs, args.site]
    _stubs()
    import lafs_train
    import utils
    from face_pre_pro.ViT_face import ViT_face_landmark_patch8, extract_patches_pytorch_gridsample
    from vision_transformer import DINOHead

    utils.SmoothedValue.synchronize_between_processes = lambda self: None  # logging only; builds a CUDA tensor
    def build():
        """Student (one-process DDP, as the official run) and teacher, from seed 0."""
        torch.manual_seed(0)
        vit = ViT_face_landmark_patch8(loss_type="None", GPU_ID=None, num_class=1, image_size=SIZE, patch_size=PATCH, dim=DIM,
                                       depth=DEPTH, heads=HEADS, dim_head=HEAD_DIM, num_patches=N_GLOBAL, mlp_dim=MLP, dropout=0.0,
                                       emb_dropout=0.0, with_land=False, use_standcoord=False, Random_prob=False, shuffle=False)
        head = DINOHead(DIM, K, use_bn=False, norm_last_layer=True, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK)
        student = nn.parallel.DistributedDataParallel(utils.MultiCropWrapper(vit, head))
        teacher = utils.MultiCropWrapper(copy.deepcopy(vit), DINOHead(DIM, K, False, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK))
        teacher.load_state_dict(student.module.state_dict())  # lafs_train.py:377
        for p in teacher.parameters():
            p.requires_grad = False
        for m in [*student.modules(), *teacher.modules()]:
            if hasattr(m, "drop_prob"):
                m.drop_prob = 0.0  # Residual_droppath's hard-coded 0.1 (ViT_face.py:107): stochastic, off on both sides
        return student, teacher

    student, teacher = build()
    init = _facerep_names(student.state_dict(), "")
    dino_loss = lafs_train.DINOLoss(K, 2 + N_LOCAL_VIEWS, 0.07, 0.04, TEMP_EPOCHS, EPOCHS)

    # ---- fixed inputs: per step the augmented views (normalised floats) and facerep's pixel points
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(STEPS):
        views = [torch.randn(B, 3, SIZE, SIZE, generator=g) * 0.5 for _ in range(2 + N_LOCAL_VIEWS)]
        gp = torch.rand(B, 2, N_GLOBAL, 2, generator=g) * (SIZE - 5) + 2
        lp = torch.rand(B, N_LOCAL_VIEWS, N_LOCAL, 2, generator=g) * (SIZE - 5) + 2
        batches.append((views, gp, lp))

    cnn = _LandmarkCNN(extract_patches_pytorch_gridsample)

    def loader(step):
        views, gp, lp = batches[step]
        off = 1.0  # the official patch is centred at point - 1 px: give it point + 1
        cnn.queue = [gp[:, 0] + off, gp[:, 1] + off, (lp.transpose(0, 1).reshape(N_LOCAL_VIEWS * B, N_LOCAL, 2) + off)]
        images = []
        for v in views:  # (clean, augmented) pairs; the stand-in landmark CNN reads only the augmented one
            images += [v, v]
        return [(images, None)]

    def run(stu, tea, loss_fn, opt, epoch, clip, freeze, lr_s, wd_s, mom_s):
        ns = argparse.Namespace(epochs=EPOCHS, clip_grad=clip, freeze_last_layer=freeze)
        return lafs_train.train_one_epoch(stu, tea, tea, cnn, loss_fn, loader(epoch), opt, lr_s, wd_s, mom_s, epoch, None, ns)

    lr_s = utils.cosine_scheduler(LR_ARG * B / 256.0, MIN_LR, EPOCHS, 1, warmup_epochs=WARMUP_EPOCHS)
    wd_s = utils.cosine_scheduler(WD, WD_END, EPOCHS, 1)
    mom_s = utils.cosine_scheduler(MOMENTUM, 1, EPOCHS, 1)

    # ---- step 0 on copies, no clip, no freeze, lr 0: the logits, the loss and the raw gradients
    (stu0, tea0), loss0 = build(), lafs_train.DINOLoss(K, 2 + N_LOCAL_VIEWS, 0.07, 0.04, TEMP_EPOCHS, EPOCHS)
    captured = {}
    stu0.module.head.register_forward_hook(lambda m, i, o: captured.__setitem__("student_logits", o.detach().clone()))
    tea0.head.register_forward_hook(lambda m, i, o: captured.__setitem__("teacher_logits", o.detach().clone()))
    opt0 = torch.optim.AdamW(utils.get_params_groups(stu0))
    stats0 = run(stu0, tea0, loss0, opt0, 0, 0.0, 0, np.zeros(EPOCHS), wd_s, mom_s)
    grads = _facerep_names({n: p.grad for n, p in stu0.named_parameters() if p.grad is not None}, "")
    norms = sorted(float(t.norm()) for t in grads.values())
    clip = round(float(np.median(norms)), 4)

    # ---- the 3-step trajectory: the official loop with clip, freeze, schedules, EMA, centre
    recorded = []
    clip_gradients = utils.clip_gradients

    def recording_clip(model, c):
        n = clip_gradients(model, c)
        recorded.append(sum(x > c for x in n))
        return n

    utils.clip_gradients = recording_clip
    optimizer = torch.optim.AdamW(utils.get_params_groups(student))
    losses, lrs = [], []
    for epoch in range(STEPS):
        stats = run(student, teacher, dino_loss, optimizer, epoch, clip, FREEZE_EPOCHS, lr_s, wd_s, mom_s)
        losses.append(stats["loss"])
        lrs.append(stats["lr"])
    utils.clip_gradients = clip_gradients

    # ---- the released model's structure (lafs_train.py:302-331): shapes and the details the options set
    torch.manual_seed(0)
    vit_b = ViT_face_landmark_patch8(loss_type="None", GPU_ID=None, num_class=1, image_size=112, patch_size=8, dim=768, depth=12,
                                     heads=11, num_patches=196, mlp_dim=2048, dropout=0.1, emb_dropout=0.1, with_land=False,
                                     use_standcoord=False, Random_prob=False, shuffle=False)
    wrapped = {"backbone." + k: v for k, v in vit_b.state_dict().items()}
    attn = vit_b.transformer.layers[0][0].fn.fn
    released = {
        "shapes": {k: list(v.shape) for k, v in _facerep_names(wrapped, "", depth=12, patch=8).items()},
        "attention_scale": attn.scale, "heads": attn.heads, "qkv_bias": attn.to_qkv.bias is not None,
        "layer_norm_eps": sorted({m.eps for m in vit_b.modules() if isinstance(m, nn.LayerNorm)}),
        "drop_path_rates": [m.drop_prob for m in vit_b.modules() if type(m).__name__ == "DropPath"],
        "pos_embed_std": float(vit_b.pos_embedding.std()), "cls_token_std": float(vit_b.cls_token.std()),
        "qkv_weight_std": float(attn.to_qkv.weight.std()), "patch_embed_bias_std": float(vit_b.patch_to_embedding.bias.std()),
    }
    del vit_b, wrapped

    tensors = {"init/" + k: v for k, v in init.items()}
    for s, (views, gp, lp) in enumerate(batches):
        for v, x in enumerate(views):
            tensors[f"step{s}/view{v}"] = x.contiguous()
        tensors[f"step{s}/global_points"], tensors[f"step{s}/local_points"] = gp.contiguous(), lp.contiguous()
    tensors["step0/student_logits"] = captured["student_logits"]
    tensors["step0/teacher_logits"] = captured["teacher_logits"]
    tensors.update({"grad/" + k: v for k, v in grads.items()})
    tensors.update({"final/" + k: v for k, v in _facerep_names(student.state_dict(), "").items()})
    tensors.update({"final/teacher_" + k: v for k, v in _facerep_names(teacher.state_dict(), "").items()})
    tensors["final/centre"] = dino_loss.center.detach().clone()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    tensors["schedule/lr"] = torch.tensor(lr_s, dtype=torch.float64)
    tensors["schedule/weight_decay"] = torch.tensor(wd_s, dtype=torch.float64)
    tensors["schedule/momentum"] = torch.tensor(mom_s, dtype=torch.float64)
    tensors["schedule/teacher_temperature"] = torch.tensor(dino_loss.teacher_temp_schedule, dtype=torch.float64)

    from safetensors.torch import save_file

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out.with_suffix(".safetensors")))
    meta = {
        "repository": "https://github.com/szlbiubiubiu/LAFS_CVPR2024", "commit": COMMIT,
        "command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/lafs_reference.py --lafs /work/official/lafs "
                   "--site /work/official/site-lafs --out plugins/facerep-lafs/tests/reference/lafs",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "numpy": np.__version__,
        "sizes": {"batch": B, "image": SIZE, "patch": PATCH, "global_points": N_GLOBAL, "local_points": N_LOCAL,
                  "local_views": N_LOCAL_VIEWS, "dim": DIM, "depth": DEPTH, "heads": HEADS, "head_dim": HEAD_DIM, "mlp": MLP,
                  "prototypes": K, "hidden": HIDDEN, "bottleneck": BOTTLENECK},
        "recipe": {"epochs": EPOCHS, "iterations_per_epoch": 1, "steps_run": STEPS, "lr_arg": LR_ARG, "lr_reference_batch": 256,
                   "peak_lr": LR_ARG * B / 256.0, "min_lr": MIN_LR, "warmup_epochs": WARMUP_EPOCHS, "weight_decay": WD,
                   "weight_decay_end": WD_END, "momentum_teacher": MOMENTUM, "freeze_last_layer": FREEZE_EPOCHS,
                   "warmup_teacher_temp": 0.07, "teacher_temp": 0.04, "warmup_teacher_temp_epochs": TEMP_EPOCHS,
                   "student_temp": 0.1, "center_momentum": 0.9, "clip_grad": clip, "clip_per_tensor": True},
        "point_offset_px": 1.0,
        "released_vit": released,
        "step0_loss": stats0["loss"], "losses": losses, "lrs": lrs,
        "clip": {"value": clip, "tensors": len(norms), "tensors_clipped_per_step": [int(x) for x in recorded],
                 "step0_norm_range": [norms[0], norms[-1]]},
        "tolerances": {
            "logits": "abs 1e-5 (float32 forward, values ~0.1-1; measured ~1e-7)",
            "loss": "rel 1e-5",
            "gradients": "abs 1e-5 x the tensor's max |grad| (float32 summation order)",
            "trajectory": "losses rel 1e-5; student / teacher weights abs 1e-5 after 3 AdamW steps at lr 1e-3 (measured "
                          "~1e-6: float32 summation order, which Adam's division by sqrt(v) can amplify in near-zero "
                          "gradients); centre abs 1e-6",
        },
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({k: meta[k] for k in ("step0_loss", "losses", "lrs", "clip")}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
