"""Reference numbers for FaRL from the official code (issue 21 §3): the equivalence fixture
``plugins/facerep-farl/tests/reference/farl.{safetensors,json}`` and BEiT's block-mask statistics
``plugins/facerep-farl/tests/reference/beit_masks.json``.

Official code (checked out outside the project, never imported by tests):

- FacePerceiver/FaRL at 3fb4694 (2023-06-09): ``farl/network/farl/model.py`` — ``VisualTransformer``
  with its MIM branch (``forward_mim``, ``lm_transformer``, ``ln_lm``, ``lm_head``, ``mask_token``).
  FaRL's pre-training code is unreleased, so the rest of the step is CLIP's as open_clip runs it:
- open_clip 3.3.0 / open_clip_train (installed in facerep's venv): ``ClipLoss`` (``loss.py``), the
  text tower (``TextTransformer``, QuickGELU as OpenAI's), ``cosine_lr`` (``scheduler.py``), the
  no-weight-decay rule (``open_clip_train/main.py:335``) and the after-step clamp of the logit scale
  to [0, ln 100] (``open_clip_train/train.py:189``).
- microsoft/unilm at 2312c6f: ``beit/masking_generator.py`` (``MaskingGenerator``), for the masks of
  the fixture and for the mask statistics.

Command that produced the stored files (from the repository root, 2 shared CPU cores, ~15 s)::

    G=$(fetch github:FacePerceiver/FaRL); mkdir -p /work/official/farl
    git --git-dir=$G archive 3fb4694 | tar -x -C /work/official/farl
    U=$(fetch github:microsoft/unilm); mkdir -p /work/official/beit
    git --git-dir=$U show 2312c6f:beit/masking_generator.py > /work/official/beit/masking_generator.py
    OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/farl_reference.py \\
        --farl /work/official/farl --beit /work/official/beit/masking_generator.py \\
        --out plugins/facerep-farl/tests/reference

Stubs and shims (none touches the compared maths): ``model.py`` is loaded by file path (the
``farl.network`` package imports mmseg and friends); ``np.int = int`` before loading BEiT's file
(alias removed in numpy 1.24); FaRL's ``Transformer.use_checkpoint`` is set to False (activation
checkpointing recomputes the same numbers; torch warns about its re-entrant default). One process:
``ClipLoss`` with world size 1.

What is compared (tiny: 32 px images, 8 px patches -> 4 x 4 grid, width 32, 2 blocks, 2 heads,
1 MIM block, 8 visual tokens, text 1 x 32 wide over 16 tokens, joint space 16, batch 4):

- ITC loss, MIM loss and their sum at the initial weights, and every parameter's gradient;
- 3 optimizer steps with the paper preset's optimizer: AdamW betas (0.9, 0.98), wd 0.05, lr 5e-4,
  open_clip's warm-up + cosine (warm-up 2 of 4 steps here), open_clip's no-decay rule, the logit
  scale clamped after each step: per-step losses and learning rates, and the final weights.

The MIM targets differ by design (facerep: a k-means patch-colour tokenizer; FaRL: a dVAE): both
sides get the same target ids (stored). The text token embedding (49,408 rows) is zero except the
rows the captions use (zero rows stay zero under AdamW: no gradient, no decay of 0), so only those
rows are stored. AdamW's eps: open_clip's ViT value 1e-6, as the preset (``train.optimizer.eps``);
the loop is run again with 1e-6 and the difference recorded in the json (0 now: kept as a check).

Weights and gradients are stored under facerep's parameter names (``FaRLObjective.state_dict()``):
the image tower through timm's ``_convert_openai_clip`` (as ``facerep farl-import``), the MIM head
with the same renaming (``lm_transformer.resblocks.i`` -> ``mim_blocks.i``, ``ln_lm`` -> ``mim_norm``,
``lm_head`` -> ``mim_head``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

WIDTH, LAYERS, HEADS, PATCH, IMG, EMBED, VOCAB = 32, 2, 2, 8, 32, 16, 8
TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS, CONTEXT = 32, 1, 2, 16
BATCH, STEPS, WARMUP, MAX_STEPS = 4, 3, 2, 4
LR, WD, BETAS, EPS = 5e-4, 0.05, (0.9, 0.98), 1e-6  # open_clip_train/params.py:9: eps 1e-6 for ViT models
MASKED, MIN_BLOCK = 6, 2  # of 16 patches (BEiT's 75 of 196 = 38 %; the preset's 40 %)
SOT, EOT = 49406, 49407


def load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PyRandom:
    """A numpy-Generator-like view of Python's ``random`` (what BEiT's generator draws from)."""

    def random(self) -> float:
        return random.random()

    def integers(self, lo: int, hi: int) -> int:
        return random.randint(lo, hi - 1)


def components(mask: np.ndarray) -> int:
    from scipy.ndimage import label

    return int(label(mask)[1])  # 4-connected


def mask_statistics(beit, n_masks: int) -> dict:
    """BEiT's MaskingGenerator on the 14 x 14 grid of a ViT-B/16 at 224 px: count and shape
    statistics, and whether facerep's ``beit_block_mask`` draws the same masks from the same stream."""
    from facerep_farl.views import beit_block_mask

    out = {}
    for n in (75, 78):  # BEiT's default 75; the preset's round(0.4 * 196) = 78
        gen = beit.MaskingGenerator((14, 14), n, min_num_patches=16)
        random.seed(0)
        masks = [gen().astype(bool) for _ in range(n_masks)]
        random.seed(0)
        same = all(np.array_equal(m.ravel(), beit_block_mask(PyRandom(), (14, 14), n, min_block=16)) for m in masks)
        counts = np.array([m.sum() for m in masks])
        comps = np.array([components(m) for m in masks])
        full = np.array([bool(m.all(0).any() or m.all(1).any()) for m in masks])
        out[str(n)] = {
            "num_masking_patches": n, "min_num_patches": 16, "grid": [14, 14], "masks": n_masks, "seed": "random.seed(0)",
            "count_mean": float(counts.mean()), "count_std": float(counts.std()), "count_min": int(counts.min()),
            "count_max": int(counts.max()), "short_fraction": float((counts < n).mean()),
            "components_mean": float(comps.mean()), "components_std": float(comps.std()),
            "full_row_or_column_fraction": float(full.mean()),
            "facerep_beit_block_mask_identical_on_the_same_stream": bool(same),
        }
    return out


def clip_state(visual, text, logit_scale) -> dict[str, torch.Tensor]:
    """Official modules -> {OpenAI-layout name: tensor} (``visual.*``, text keys at top level)."""
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state.update(text.state_dict())
    state["logit_scale"] = logit_scale.detach()
    return {k: v.detach().clone() for k, v in state.items()}  # a copy: training changes the modules in place


def to_facerep(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI/FaRL-layout tensors (weights or their gradients) -> ``FaRLObjective`` names."""
    from timm.models.vision_transformer import _convert_openai_clip

    visual = _convert_openai_clip({k: v for k, v in named.items() if k.startswith("visual.")}, None)
    out: dict[str, torch.Tensor] = {}
    for k, v in visual.items():
        if k == "head.weight":
            out["joint.image_proj.weight"] = v
        elif k == "head.bias":
            continue
        elif k == "mask_token":
            out["mask_token"] = v
        elif k.startswith("lm_blocks."):
            out["mim_blocks." + k[len("lm_blocks."):]] = v
        elif k.startswith("normlm."):
            out["mim_norm." + k[len("normlm."):]] = v
        elif k.startswith("lm_head."):
            out["mim_head." + k[len("lm_head."):]] = v
        else:
            out[f"backbone.model.{k}"] = v
    for k, v in named.items():
        if k == "logit_scale":
            out["joint.logit_scale"] = v
        elif not k.startswith("visual.") and not k.endswith("attn_mask"):
            out[f"joint.text.transformer.{k}"] = v
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def build(farl_model, used_rows: torch.Tensor):
    from open_clip.transformer import QuickGELU, TextTransformer

    torch.manual_seed(0)
    cfg = SimpleNamespace(MIM=SimpleNamespace(ENABLE=True, LAYERS=1, VOCAB_SIZE=VOCAB))
    visual = farl_model.VisualTransformer(input_resolution=IMG, patch_size=PATCH, width=WIDTH, layers=LAYERS, heads=HEADS,
                                          output_dim=EMBED, config=cfg)
    visual.transformer.use_checkpoint = False
    visual.lm_transformer.use_checkpoint = False
    text = TextTransformer(context_length=CONTEXT, vocab_size=49408, width=TEXT_WIDTH, heads=TEXT_HEADS, layers=TEXT_LAYERS,
                           output_dim=EMBED, act_layer=QuickGELU)
    with torch.no_grad():
        keep = torch.zeros(49408, dtype=torch.bool)
        keep[used_rows] = True
        text.token_embedding.weight[~keep] = 0.0
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    return visual, text, logit_scale


def step_loss(visual, text, logit_scale, clip_loss, x, ids, mask, targets):
    """FaRL's forward_mim (clean + masked copy in one pass) + CLIP's loss + BEiT's MIM loss."""
    out = visual(x, bool_masked_pos=mask)
    image = F.normalize(out["feature"], dim=-1)
    txt = F.normalize(text(ids), dim=-1)
    itc = clip_loss(image, txt, logit_scale.exp())
    mim = F.cross_entropy(out["logits"].float(), targets[mask])  # BEiT: labels = input_ids[bool_masked_pos]
    return itc + mim, itc, mim


def train(farl_model, inputs, used_rows, eps):
    from open_clip.loss import ClipLoss
    from open_clip_train.scheduler import cosine_lr

    visual, text, logit_scale = build(farl_model, used_rows)
    initial = clip_state(visual, text, logit_scale)
    named = [(f"visual.{n}", p) for n, p in visual.named_parameters()] + list(text.named_parameters()) + [("logit_scale", logit_scale)]
    # open_clip_train/main.py:335: no decay for ndim < 2, 'bn', 'ln', 'bias', 'logit_scale'
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    no_decay = [n for n, p in named if exclude(n, p)]
    optimizer = torch.optim.AdamW([{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
                                   {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": WD}],
                                  lr=LR, betas=BETAS, eps=eps)
    scheduler = cosine_lr(optimizer, LR, WARMUP, MAX_STEPS)
    clip_loss = ClipLoss()
    visual.train(), text.train()
    logs, grads0 = [], None
    for step in range(STEPS):
        lr = scheduler(step)  # open_clip_train/train.py:90, before the forward
        x, ids, mask, targets = (inputs[k][step] for k in ("x", "ids", "mask", "targets"))
        optimizer.zero_grad()
        loss, itc, mim = step_loss(visual, text, logit_scale, clip_loss, x, ids, mask, targets)
        loss.backward()
        if step == 0:
            grads0 = {n: p.grad.detach().clone() for n, p in named}
        optimizer.step()
        with torch.no_grad():
            logit_scale.clamp_(0, math.log(100))  # open_clip_train/train.py:189
        logs.append({"loss": float(loss.detach()), "loss_itc": float(itc.detach()), "loss_mim": float(mim.detach()), "lr": lr,
                     "logit_scale_after": float(logit_scale.detach())})
    return initial, grads0, logs, clip_state(visual, text, logit_scale), no_decay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--farl", required=True, type=Path, help="FacePerceiver/FaRL checkout at 3fb4694")
    ap.add_argument("--beit", required=True, type=Path, help="microsoft/unilm 2312c6f beit/masking_generator.py")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--mask-samples", type=int, default=4000)
    args = ap.parse_args()
    np.int = int  # BEiT's generator uses the alias removed in numpy 1.24
    beit = load_file(args.beit, "beit_masking_generator")
    farl_model = load_file(args.farl / "farl/network/farl/model.py", "farl_model")
    torch.set_num_threads(1)

    # inputs: normalised images, CLIP-layout caption ids, BEiT masks, MIM target ids
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, BATCH, 3, IMG, IMG, generator=g)
    words = torch.randint(1000, 1100, (STEPS, BATCH, 6), generator=g)
    ids = torch.zeros(STEPS, BATCH, CONTEXT, dtype=torch.long)
    for s in range(STEPS):
        for b in range(BATCH):
            n = 3 + (s + b) % 4
            ids[s, b, : n + 2] = torch.cat([torch.tensor([SOT]), words[s, b, :n], torch.tensor([EOT])])
    random.seed(1)
    gen = beit.MaskingGenerator((IMG // PATCH,) * 2, MASKED, min_num_patches=MIN_BLOCK)
    mask = torch.from_numpy(np.stack([[gen().astype(bool).ravel() for _ in range(BATCH)] for _ in range(STEPS)]))
    targets = torch.randint(0, VOCAB, (STEPS, BATCH, (IMG // PATCH) ** 2), generator=g)
    inputs = {"x": x, "ids": ids, "mask": mask, "targets": targets}
    used_rows = torch.unique(ids)

    initial, grads0, logs, final, no_decay = train(farl_model, inputs, used_rows, EPS)
    _, _, logs_eps6, final_eps6, _ = train(farl_model, inputs, used_rows, 1e-6)

    tensors = {f"input.{k}": v for k, v in inputs.items()}
    tensors["text_rows"] = used_rows
    for tag, state in (("init", initial), ("final", final)):
        for k, v in to_facerep(state).items():
            if k == "joint.text.transformer.token_embedding.weight":
                v = v[used_rows]
            tensors[f"{tag}.{k}"] = v
    grads = to_facerep(grads0)
    for k, v in grads.items():
        tensors[f"grad.{k}"] = v[used_rows] if k == "joint.text.transformer.token_embedding.weight" else v
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out / "farl.safetensors"))

    eps_diff = max(float((final_eps6[k] - final[k]).abs().max()) for k in final)
    meta = {
        "method": "farl",
        "official": {"repo": "FacePerceiver/FaRL", "commit": "3fb4694", "files": ["farl/network/farl/model.py"],
                     "clip": "open_clip 3.3.0 / open_clip_train (ClipLoss, TextTransformer, cosine_lr, main.py:335 no-decay rule, "
                             "train.py:189 clamp)",
                     "masks": "microsoft/unilm 2312c6f beit/masking_generator.py"},
        "command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/faithfulness/farl_reference.py --farl /work/official/farl "
                   "--beit /work/official/beit/masking_generator.py --out plugins/facerep-farl/tests/reference",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "numpy": np.__version__,
        "sizes": {"image": IMG, "patch": PATCH, "width": WIDTH, "layers": LAYERS, "heads": HEADS, "embed_dim": EMBED,
                  "vocab_size": VOCAB, "mim_layers": 1, "text_width": TEXT_WIDTH, "text_layers": TEXT_LAYERS, "text_heads": TEXT_HEADS,
                  "context_length": CONTEXT, "batch": BATCH, "masked_patches": MASKED, "min_block": MIN_BLOCK},
        "train": {"lr": LR, "weight_decay": WD, "betas": list(BETAS), "eps": EPS, "warmup_steps": WARMUP, "max_steps": MAX_STEPS,
                  "steps": STEPS, "schedule": "open_clip cosine_lr: lr (step + 1) / warmup, then cosine to 0",
                  "no_decay_official_names": no_decay},
        "reference": {"loss": logs[0]["loss"], "loss_itc": logs[0]["loss_itc"], "loss_mim": logs[0]["loss_mim"], "steps": logs},
        "eps_1e-6": {"steps": logs_eps6, "max_abs_weight_diff_after_3_steps_vs_eps_1e-8": eps_diff,
                     "note": "open_clip's ViT default eps (CLIP paper); facerep's AdamW has torch's 1e-8 and no option"},
        "tolerances": {
            "loss_rel": 1e-5, "grad_rel_to_tensor_max": 1e-5, "weights_after_3_steps_abs": 1e-5, "lr_rel": 1e-9,
            "why": "float32 on both sides; the two sides use different but equivalent kernels (nn.MultiheadAttention vs timm's "
                   "fused attention, FaRL's TF-style LayerNorm vs torch's), so values agree to float rounding (measured: losses "
                   "<= 1.2e-7 relative, gradients <= 1.2e-6 of each tensor's largest entry, weights after 3 steps <= 1.7e-7). "
                   "AdamW's first steps move each weight by ~lr = 5e-4 in the sign of its gradient, so a 1e-5 absolute weight "
                   "tolerance after 3 steps is 2 % of one step: a sign flip of a real gradient entry, a wrong lr or a wrong "
                   "decay group exceeds it. Excluded from the weight check: the key third of each attention's q/k/v bias, whose "
                   "gradient is exactly zero in exact arithmetic (softmax is invariant to it) and float noise (~1e-7 of the q/v "
                   "parts) on both sides, which Adam turns into steps of random sign",
        },
    }
    (args.out / "farl.json").write_text(json.dumps(meta, indent=1) + "\n")

    stats = {"source": "microsoft/unilm 2312c6f beit/masking_generator.py (MaskingGenerator, run with np.int = int)",
             "command": meta["command"], "date": meta["date"], "numpy": np.__version__,
             "components": "4-connected pieces (scipy.ndimage.label)",
             "statistics": mask_statistics(beit, args.mask_samples)}
    (args.out / "beit_masks.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps({"loss": logs[0], "steps": [log["loss"] for log in logs], "eps_1e-6_weight_diff": eps_diff,
                      "beit": {k: {m: v[m] for m in ("count_mean", "components_mean", "full_row_or_column_fraction",
                                                     "facerep_beit_block_mask_identical_on_the_same_stream")}
                               for k, v in stats["statistics"].items()}}, indent=1))


if __name__ == "__main__":
    main()
