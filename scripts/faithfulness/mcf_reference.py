"""Reference numbers for MCF's equivalence test, produced by the official code.

Official repository: https://github.com/nomewang/MCF at commit ``bc8706f`` (README: pytorch 1.8.2,
timm 0.3.2), run under its pinned ``timm==0.3.2`` installed outside facerep's environment::

    python -m pip install --no-deps --target /work/official/site-mcf timm==0.3.2
    git --git-dir=<mirror of nomewang/MCF> archive bc8706f | tar -x -C /work/official/mcf
    OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/mcf_reference.py \\
        --mcf /work/official/mcf --site /work/official/site-mcf \\
        --out plugins/facerep-mcf/tests/reference

What runs unchanged: ``models_mcf.MaskedAutoencoderViT`` (encoders, masking, decoder, projector,
predictor, target EMA in every forward, contrastive loss), ``models_moco.CPLoss`` (the teacher's
features, ``F.interpolate(size=224)``, token-axis normalisation, MSE), and the training loop itself:
``engine_pretrain.train_one_epoch`` (``lr_sched.adjust_learning_rate`` every ``accum_iter``
micro-batches, ``loss / accum_iter``, ``NativeScalerWithGradNormCount`` stepping every 2nd
micro-batch, ``zero_grad``), with the optimizer built as ``main_pretrain.py:193-196`` builds it
(timm-0.3.2 ``add_weight_decay`` groups, ``AdamW(betas=(0.9, 0.95))``; ``main_pretrain.py`` itself
cannot be imported: it imports ``models_mcg``, which the repository lacks).

Stubs, and nothing else:

- imports: ``torch._six`` (gone from torch) is provided with ``container_abcs = collections.abc``
  for timm 0.3.2, and ``np.float = float`` for ``util/pos_embed.py:45``;
- devices: ``.cuda()`` on modules and tensors is the identity, ``torch.cuda.synchronize`` a no-op;
  CUDA is hidden, so ``torch.cuda.amp.autocast`` and ``GradScaler`` are disabled (float32; the
  paper run's fp16 is not what this fixture checks);
- one gloo process group (rank 0 of 1) for ``get_rank`` / ``all_gather`` in the contrastive loss;
  ``util.misc.is_dist_avail_and_initialized`` answers False to the metric logger only, whose
  end-of-epoch average puts a tensor on ``'cuda'`` (``util/misc.py:37``; logging, not training);
- size: the teacher ``models_moco.vit_base_patch16`` (hard-coded in ``CPLoss``) is the same class
  with width 16 and 2 heads (12 blocks, patch 16, 224 px: blocks 2/5/8/11 and all 197 tokens as in
  the paper run), randomly initialised by timm 0.3.2 (no ``--cpl_ckpt`` file); the projector /
  predictor widths hard-coded at ``models_mcf.py:139`` (256 / 4096) are 16 / 64 (the official
  ``_build_projector_and_predictor_mlps`` called with them). Student: ``MaskedAutoencoderViT``
  (32 px, patch 8: a 4 x 4 grid, width 32, 2 blocks, 2 heads, decoder 1 x 32 with 2 heads,
  LayerNorm eps 1e-6 as every ``mae_vit_*`` factory), mask ratio 0.75, m 0.99, T 0.2.

What is recorded (fixture ``mcf.safetensors`` + ``mcf.json``; weights in facerep's key names):

1. one forward / backward of a fresh model on 4 images: total loss, ``L_CPL`` (unweighted), ``L_con``
   and the gradient of every trained tensor, with the two masks the official code drew;
2. the official loop with ``accum_iter = 2``: 4 optimizer steps of 2 micro-batches of 4 images,
   ``warmup_epochs = 1`` and 2 optimizer steps per epoch (lr 0, lr / 2, lr, then half-cosine with
   ``epochs = 3``), blr 0.32 (lr 0.01 at 8 images per step: large enough that weight decay and every
   Adam step show), wd 0.05. Per micro-batch: loss, its terms, both masks, and the target encoder
   (+ projector) the micro-batch's key came from (a few tensors); after the last step the full
   online model and the full target. Initial weights (the target starts as a copy of the online
   encoder), the teacher, the official fixed position tables and the names of the no-decay group.
"""

from __future__ import annotations

import argparse
import collections.abc
import copy
import datetime
import json
import os
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

B, ACCUM, STEPS, STEPS_PER_EPOCH = 4, 2, 4, 2
BLR, WD, EPOCHS, WARMUP_EPOCHS = 0.32, 0.05, 3, 1
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# target-encoder tensors recorded at every micro-batch (the whole target is recorded at the end)
TARGET_WATCH = ("patch_embed.proj.bias", "cls_token", "blocks.1.attn.qkv.weight", "norm.weight", "fc.0.weight", "fc.3.weight")


def _facerep_name(name: str) -> str:
    """Official ``MaskedAutoencoderViT`` parameter name -> facerep ``MCFObjective`` name."""
    for old, new in (("online_encoder.fc.", "projector."), ("target_encoder.fc.", "target_projector."),
                     ("online_encoder.", "backbone.model."), ("target_encoder.", "target_backbone.model."),
                     ("decoder_embed.", "decoder.embed."), ("decoder_blocks.", "decoder.blocks."), ("decoder_norm.", "decoder.norm."),
                     ("decoder_pred.", "decoder.pred."), ("mask_token", "decoder.mask_token"), ("predictor.", "predictor.")):
        if name.startswith(old):
            return new + name[len(old):]
    raise KeyError(name)


def _views(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> ``ToTensor`` + ``Normalize`` (``main_pretrain.py:132-137``), in the test's exact ops."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _install_stubs(site: Path, mcf: Path) -> None:
    six = types.ModuleType("torch._six")
    six.container_abcs = collections.abc
    six.string_classes = str
    six.int_classes = int
    six.inf = float("inf")  # util/misc.py:20 (torch._six.inf)
    sys.modules["torch._six"] = six
    np.float = float  # util/pos_embed.py:45 (removed in numpy 1.24)
    nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
    sys.path[:0] = [str(site), str(mcf)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mcf", type=Path, required=True, help="checkout of nomewang/MCF at bc8706f")
    ap.add_argument("--site", type=Path, required=True, help="folder with timm==0.3.2 (pip --target)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    _install_stubs(args.site, args.mcf)

    import timm
    import torch.distributed as dist

    assert timm.__version__ == "0.3.2", timm.__version__
    import engine_pretrain
    import models_mcf
    import models_moco
    import timm.optim.optim_factory as optim_factory
    import util.misc as misc
    from util.misc import NativeScalerWithGradNormCount as NativeScaler

    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
        misc.is_dist_avail_and_initialized = lambda: False  # the metric logger only (see the docstring)

        def tiny_teacher(**kwargs):  # stands in for models_moco.vit_base_patch16 (ViT-B) inside CPLoss
            return models_moco.VisionTransformer(patch_size=16, embed_dim=16, depth=12, num_heads=2, mlp_ratio=4, qkv_bias=True,
                                                 norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)

        models_moco.vit_base_patch16 = tiny_teacher
        build_mlps = models_mcf.MaskedAutoencoderViT._build_projector_and_predictor_mlps
        models_mcf.MaskedAutoencoderViT._build_projector_and_predictor_mlps = lambda self, hidden, _dim, _mlp: build_mlps(
            self, hidden, 16, 64)

        torch.manual_seed(0)
        model = models_mcf.MaskedAutoencoderViT(
            img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
            mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), cpl_ckpt=f"{tmp}/no_teacher_checkpoint", temperature=0.2)
        gen = torch.Generator().manual_seed(1)
        images = torch.randint(0, 256, (STEPS * ACCUM * B, 3, 32, 32), dtype=torch.uint8, generator=gen)
        views = _views(images)

        tensors: dict[str, torch.Tensor] = {"images": images}
        trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for name, p in trained.items():
            tensors[f"init.{_facerep_name(name)}"] = p.detach().clone()
        for name, p in model.target_encoder.named_parameters():
            online = dict(model.online_encoder.named_parameters())[name]
            assert torch.equal(p, online), f"target {name} starts as a copy of the online encoder (models_mcf.py:183-185)"
        for name, p in model.perceptual_loss.model.named_parameters():
            if not name.startswith("head."):
                tensors[f"teacher.{name}"] = p.detach().clone()
        tensors["official.pos_embed"] = model.online_encoder.pos_embed.detach()[0].clone()
        tensors["official.decoder_pos_embed"] = model.decoder_pos_embed.detach()[0].clone()

        # what the official code draws and computes, recorded without changing it
        fresh = copy.deepcopy(model)  # for 1.; the training run (2.) starts from the same weights
        masks, terms = _recorders(fresh)

        # 1. one forward / backward
        torch.manual_seed(2)
        fresh.train(True)
        loss, _, _ = fresh(views[:B], mask_ratio=0.75)
        loss.backward()
        tensors["grad.mask"] = torch.stack([masks["online"][0], masks["target"][0]], dim=1)
        grad_terms = {"loss": float(loss), "loss_feature": terms["loss_feature"][0], "loss_contrast": terms["loss_contrast"][0]}
        for name, p in fresh.named_parameters():
            if p.requires_grad:
                tensors[f"grad.{_facerep_name(name)}"] = p.grad.detach().clone()

        # 2. the official loop (engine_pretrain.train_one_epoch) with accum_iter 2
        masks, terms = _recorders(model)
        snapshots: list[dict[str, torch.Tensor]] = []
        model.target_encoder.register_forward_pre_hook(
            lambda mod, inp: snapshots.append({n: p.detach().clone() for n, p in mod.named_parameters() if n in TARGET_WATCH}))
        model.register_forward_hook(lambda mod, inp, out: terms["loss"].append(float(out[0])))
        eff_batch = B * ACCUM * 1
        run_args = argparse.Namespace(accum_iter=ACCUM, lr=BLR * eff_batch / 256, min_lr=0.0, warmup_epochs=WARMUP_EPOCHS,
                                      epochs=EPOCHS, mask_ratio=0.75)
        param_groups = optim_factory.add_weight_decay(model, WD)  # main_pretrain.py:193-196
        optimizer = torch.optim.AdamW(param_groups, lr=run_args.lr, betas=(0.9, 0.95))
        loss_scaler = NativeScaler()
        names = {id(p): n for n, p in model.named_parameters()}
        no_decay = sorted(_facerep_name(names[id(p)]) for p in param_groups[0]["params"])
        lrs: list[float] = []
        optimizer.register_step_pre_hook(lambda opt, a, k: lrs.append(opt.param_groups[0]["lr"]))
        torch.manual_seed(3)
        per_epoch = STEPS_PER_EPOCH * ACCUM
        for epoch in range(STEPS // STEPS_PER_EPOCH):
            loader = [(views[i * B : (i + 1) * B], torch.zeros(B)) for i in range(epoch * per_epoch, (epoch + 1) * per_epoch)]
            engine_pretrain.train_one_epoch(model, loader, optimizer, torch.device("cpu"), epoch, loss_scaler, args=run_args)
        dist.destroy_process_group()

    n_micro = STEPS * ACCUM
    assert len(snapshots) == len(terms["loss"]) == len(masks["online"]) == n_micro and len(lrs) == STEPS
    tensors["train.mask"] = torch.stack([torch.stack([masks["online"][i], masks["target"][i]], dim=1) for i in range(n_micro)])
    for key in ("loss", "loss_feature", "loss_contrast"):
        tensors[f"train.{key}"] = torch.tensor(terms[key], dtype=torch.float64)
    tensors["train.lr"] = torch.tensor(lrs, dtype=torch.float64)
    for name in TARGET_WATCH:
        tensors[f"train.target_at_micro.{_facerep_name('target_encoder.' + name)}"] = torch.stack([s[name] for s in snapshots])
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors[f"final.{_facerep_name(name)}"] = p.detach().clone()
    for name, p in model.target_encoder.named_parameters():
        if name != "pos_embed":
            tensors[f"final.{_facerep_name('target_encoder.' + name)}"] = p.detach().clone()

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out / "mcf.safetensors"))
    meta = {
        "method": "mcf", "repository": "https://github.com/nomewang/MCF", "commit": "bc8706f", "timm": timm.__version__,
        "torch": torch.__version__, "numpy": np.__version__, "date": datetime.date.today().isoformat(),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/mcf_reference.py --mcf /work/official/mcf "
                   "--site /work/official/site-mcf --out plugins/facerep-mcf/tests/reference",
        "sizes": {"img": 32, "patch": 8, "width": 32, "depth": 2, "heads": 2, "decoder_width": 32, "decoder_depth": 1,
                  "decoder_heads": 2, "proj_dim": 16, "proj_hidden": 64, "teacher": {"width": 16, "depth": 12, "heads": 2, "patch": 16,
                                                                                    "img": 224, "layers": [2, 5, 8, 11]}},
        "train": {"batch_per_micro": B, "accum_iter": ACCUM, "optimizer_steps": STEPS, "optimizer_steps_per_epoch": STEPS_PER_EPOCH,
                  "epochs": EPOCHS, "warmup_epochs": WARMUP_EPOCHS, "blr": BLR, "lr": run_args.lr, "weight_decay": WD,
                  "betas": [0.9, 0.95], "momentum": 0.99, "mask_ratio": 0.75, "temperature": 0.2},
        "grad_check": grad_terms,
        "micro_batches": {k: terms[k] for k in ("loss", "loss_feature", "loss_contrast")},
        "lr_per_step": lrs,
        "no_decay": no_decay,
        "target_watch": [_facerep_name("target_encoder." + n) for n in TARGET_WATCH],
    }
    (args.out / "mcf.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: meta[k] for k in ("grad_check", "micro_batches", "lr_per_step")}, indent=1))


def _recorders(model: nn.Module) -> tuple[dict[str, list[torch.Tensor]], dict[str, list[float]]]:
    """Instance-level wrappers that record, and change nothing: the mask each encoder's
    ``random_masking`` draws (``models_mcf.py:37-63``; the online then the target encoder in every
    forward) and the two loss terms (``sslp_loss``: ``L_CPL`` unweighted; ``contrastive_loss``)."""
    masks: dict[str, list[torch.Tensor]] = {"online": [], "target": []}
    terms: dict[str, list[float]] = {"loss": [], "loss_feature": [], "loss_contrast": []}
    for key, enc in (("online", model.online_encoder), ("target", model.target_encoder)):
        def masking(x, mask_ratio, ids_shuffle=None, _orig=enc.random_masking, _key=key):
            out = _orig(x, mask_ratio, ids_shuffle)
            masks[_key].append(out[1].bool().clone())  # 1 = removed, in grid order
            return out
        enc.random_masking = masking

    def term(store: list[float], fn):
        def wrapped(*a):
            value = fn(*a)
            store.append(float(value))
            return value
        return wrapped

    model.sslp_loss = term(terms["loss_feature"], model.sslp_loss)
    model.contrastive_loss = term(terms["loss_contrast"], model.contrastive_loss)
    return masks, terms


if __name__ == "__main__":
    main()
