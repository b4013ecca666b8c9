"""FaRL against numbers from the official code (issue 21 §3), read from the stored fixture only.

``tests/reference/farl.{safetensors,json}`` were produced by ``scripts/faithfulness/farl_reference.py``
from FacePerceiver/FaRL 3fb4694 (``VisualTransformer`` with its MIM branch), open_clip's
``ClipLoss`` / text tower / ``cosine_lr`` / no-decay rule / logit-scale clamp, and BEiT's masks (the
json says how). Here the facerep objective, built with the paper preset's method params at tiny
size and loaded with the same initial weights, must give the same ITC and MIM losses, the same
gradients, and the same 3-step trajectory under the paper preset's optimizer through the runner's
own training step (``facerep.testing.steps.runner_steps``). Both sides get the same MIM target ids
(facerep's k-means tokenizer and FaRL's dVAE differ by design).

``tests/reference/beit_masks.json`` holds statistics measured on BEiT's ``MaskingGenerator``; the
plugin's ``beit`` masks must match them (and draw BEiT's exact masks from Python's stream there).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

REF = Path(__file__).resolve().parent / "reference"
PRESET = Path(__file__).resolve().parents[1] / "src/facerep_farl/configs/farl_vit_b16_paper.yaml"


class _FixedTargets(torch.nn.Module):
    """Stands in for the patch tokenizer: the stored target ids, one batch per call."""

    def __init__(self, targets: torch.Tensor) -> None:
        super().__init__()
        self.targets = list(targets)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.targets.pop(0)


@pytest.fixture(scope="module")
def ref():
    meta = json.loads((REF / "farl.json").read_text())
    return meta, load_file(str(REF / "farl.safetensors"))


def _objective(meta, tensors, targets):
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.config import structure
    from facerep_farl.farl import FaRLObjective, FaRLParams

    preset = yaml.safe_load(PRESET.read_text())
    z = meta["sizes"]
    bb = dict(preset["backbone"]["params"])
    bb.update(img_size=z["image"], patch_size=z["patch"], layers=[],
              model_kwargs={"embed_dim": z["width"], "depth": z["layers"], "num_heads": z["heads"]})
    backbone = TimmBackbone(structure(bb, TimmBackboneParams))
    params = dict(preset["objective"]["params"])
    params.update(embed_dim=z["embed_dim"], text_width=z["text_width"], text_layers=z["text_layers"], text_heads=z["text_heads"],
                  context_length=z["context_length"], vocab_size=z["vocab_size"], min_block=z["min_block"])
    obj = FaRLObjective(structure(params, FaRLParams), backbone=backbone)
    obj.patch_tokenizer = _FixedTargets(targets)
    state = obj.state_dict()
    init = {k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")}
    rows = tensors["text_rows"]
    emb = "joint.text.transformer.token_embedding.weight"
    full = torch.zeros_like(state[emb])
    full[rows] = init.pop(emb)
    init[emb] = full
    params_only = {n for n, _ in obj.named_parameters()}
    assert params_only == set(init), f"fixture vs objective parameters: {sorted(params_only ^ set(init))}"
    obj.load_state_dict(init, strict=False)
    return obj, preset


def _batch(tensors, step):
    return {"views": [tensors["input.x"][step]],
            "extras": {"text": tensors["input.ids"][step], "mim_mask": tensors["input.mask"][step]}}


def test_losses_and_gradients_match_the_official_model(ref, farl_plugins):
    meta, t = ref
    obj, _ = _objective(meta, t, t["input.targets"][:1])
    obj.train()
    b = _batch(t, 0)
    out = obj(b["views"], b["extras"])
    r = meta["reference"]
    assert math.isclose(float(out.loss.detach()), r["loss"], rel_tol=1e-5)
    assert math.isclose(out.logs["loss_itc"], r["loss_itc"], rel_tol=1e-5)
    assert math.isclose(out.logs["loss_mim"], r["loss_mim"], rel_tol=1e-5)
    out.loss.backward()
    rows = t["text_rows"]
    worst = 0.0
    for name, p in obj.named_parameters():
        g = p.grad if name != "joint.text.transformer.token_embedding.weight" else p.grad[rows]
        want = t[f"grad.{name}"]
        scale = float(want.abs().max())
        assert scale > 0, f"{name}: the official gradient is zero"
        err = float((g - want).abs().max()) / scale
        worst = max(worst, err)
        assert err <= 1e-5, f"{name}: {err:.3g} of {scale:.3g}"
    print(f"largest gradient difference: {worst:.3g} of the tensor's largest entry")


def test_three_steps_with_the_paper_optimizer_match_the_official_loop(ref, farl_plugins):
    from facerep.testing.steps import runner_steps

    meta, t = ref
    obj, preset = _objective(meta, t, t["input.targets"])
    tr, ps = meta["train"], preset["train"]
    w_preset = ps["schedule"]["warmup_steps"]
    # open_clip's warm-up is lr (step + 1) / W: start factor 1 / W, peak on the last warm-up step
    assert math.isclose(ps["schedule"]["warmup_start_factor"], 1 / w_preset) and ps["schedule"].get("final_factor") == 0.0
    train = {"max_steps": tr["max_steps"], "batch_size": meta["sizes"]["batch"], "precision": "fp32",
             "optimizer": ps["optimizer"],
             "schedule": {**ps["schedule"], "warmup_steps": tr["warmup_steps"], "warmup_start_factor": 1 / tr["warmup_steps"]}}
    assert train["optimizer"]["lr"] == tr["lr"] and train["optimizer"]["weight_decay"] == tr["weight_decay"]
    assert list(train["optimizer"]["betas"]) == tr["betas"] and train["optimizer"]["eps"] == tr["eps"]
    lrs: list[list[float]] = []  # every group's lr at each optimizer step
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    hook = register_optimizer_step_pre_hook(lambda opt, *_: lrs.append([g["lr"] for g in opt.param_groups]))
    try:
        logs, _ = runner_steps(obj, [_batch(t, s) for s in range(tr["steps"])], train)
    finally:
        hook.remove()
    for step, (got, want) in enumerate(zip(logs, meta["reference"]["steps"], strict=False)):
        assert math.isclose(got["loss"], want["loss"], rel_tol=1e-5), (step, got["loss"], want["loss"])
        assert math.isclose(got["loss_itc"], want["loss_itc"], rel_tol=1e-5), step
        assert all(math.isclose(lr, want["lr"], rel_tol=1e-9) for lr in lrs[step]), (step, lrs[step], want["lr"])
    rows = t["text_rows"]
    for name, p in obj.named_parameters():
        got = p.detach() if name != "joint.text.transformer.token_embedding.weight" else p.detach()[rows]
        want = t[f"final.{name}"]
        if name.endswith(("qkv.bias", "in_proj_bias")):
            # the key bias has no effect on softmax attention: its gradient is float noise on both
            # sides (~1e-7 of the q / v parts), which Adam turns into +-lr steps of random sign
            q, k, v = t[f"grad.{name}"].view(3, -1).abs().amax(1)
            assert k < 1e-5 * min(q, v), f"{name}: the key-bias gradient is not noise"
            got, want = got.view(3, -1)[[0, 2]], want.view(3, -1)[[0, 2]]
        assert float((got - want).abs().max()) <= 1e-5, f"{name}: {float((got - want).abs().max()):.3g}"
    emb = obj.joint.text.transformer.token_embedding.weight.detach()
    untouched = torch.ones(len(emb), dtype=torch.bool)
    untouched[rows] = False
    assert not emb[untouched].any(), "rows no caption uses stay zero (no gradient, decay of 0)"


def _components(mask: np.ndarray) -> int:
    """4-connected pieces of a 2-D bool mask."""
    seen = np.zeros_like(mask)
    n = 0
    for start in zip(*np.nonzero(mask), strict=False):
        if seen[start]:
            continue
        n += 1
        stack = [start]
        seen[start] = True
        while stack:
            i, j = stack.pop()
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                    seen[a, b] = True
                    stack.append((a, b))
    return n


@pytest.mark.parametrize("n", [75, 78])
def test_beit_masks_have_beits_count_and_shape_statistics(n):
    """2,000 masks of 14 x 14 from a numpy stream vs the statistics of 4,000 BEiT masks: mean count,
    mean number of pieces and the share of masks with a full row or column, within 4 standard errors."""
    from facerep_farl.views import beit_block_mask

    ref = json.loads((REF / "beit_masks.json").read_text())["statistics"][str(n)]
    assert ref["facerep_beit_block_mask_identical_on_the_same_stream"]
    rng = np.random.default_rng(0)
    masks = [beit_block_mask(rng, (14, 14), n, min_block=16).reshape(14, 14) for _ in range(2000)]
    counts = np.array([m.sum() for m in masks])
    comps = np.array([_components(m) for m in masks])
    full = np.mean([m.all(0).any() or m.all(1).any() for m in masks])
    se = lambda std: 4 * std * math.sqrt(1 / 2000 + 1 / ref["masks"])
    assert abs(counts.mean() - ref["count_mean"]) < se(ref["count_std"]) and counts.max() <= n
    assert abs(comps.mean() - ref["components_mean"]) < se(ref["components_std"])
    p = ref["full_row_or_column_fraction"]
    assert abs(full - p) < se(math.sqrt(p * (1 - p)))
    assert not any(m.all(0).all() or m.all(1).all() for m in masks)


def test_exact_masks_are_more_fragmented_than_beits():
    """The ``exact`` option (facerep's block_mask) keeps its exact count at the price of more pieces."""
    from facerep.backbones.masking import block_mask

    ref = json.loads((REF / "beit_masks.json").read_text())["statistics"]["78"]
    rng = np.random.default_rng(0)
    masks = [block_mask(rng, (14, 14), 0.4, min_block=16).reshape(14, 14) for _ in range(500)]
    assert all(m.sum() == 78 for m in masks)
    assert np.mean([_components(m) for m in masks]) > ref["components_mean"] + 0.3
