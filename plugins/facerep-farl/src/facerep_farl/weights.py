"""Import FaRL / OpenAI-CLIP ViT-B/16 weights (OpenAI's parameter layout: ``visual.conv1``,
``visual.transformer.resblocks.*``, ``visual.proj``, ``token_embedding``, ``ln_final``,
``text_projection``, ``logit_scale``; FaRL's released checkpoints use it, wrapped in
``{"state_dict": ...}``) into a facerep backbone (``core.timm`` ``vit_base_patch16_clip_quickgelu_224``
with CLIP's normalisation) and a FaRL joint embedding.

The image tower goes through timm's own OpenAI-CLIP converter (``_convert_openai_clip``); its
``visual.proj`` becomes the joint embedding's image projection, and the text keys go to the text
tower under the same names (open_clip's ``TextTransformer`` keeps OpenAI's). Checkpoints are read
with ``weights_only=True`` (or as safetensors): nothing pickled is executed.

A checkpoint saved with FaRL's MIM head (``visual.mask_token``, ``visual.lm_transformer.*``,
``visual.ln_lm.*``, ``visual.lm_head.*``: FacePerceiver/FaRL ``farl/network/farl/model.py:316-320``)
imports too: those keys are left out and listed, as FaRL's own ``load_farl`` ignores them
(``model.py:421-427``, ``strict=False``). Any other key the towers do not have is still an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facerep.errors import DataError

__all__ = ["CLIP_MEAN", "CLIP_STD", "MIM_PREFIXES", "clip_backbone_params", "farl_b16_params", "import_clip", "split_clip_state",
           "write_import"]

#: CLIP's input normalisation (after scaling to [0, 1]; ``specs/methods.md`` §0.2).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Keys of FaRL's pre-training-only MIM head in the OpenAI layout (``model.py:316-320``).
MIM_PREFIXES = ("visual.mask_token", "visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head.")


def clip_backbone_params(layers: tuple[int, ...] = (3, 5, 7, 11)) -> dict[str, Any]:
    """``core.timm`` params of CLIP's ViT-B/16 image tower (pre-norm, QuickGELU, no patch bias)."""
    return {"model": "vit_base_patch16_clip_quickgelu_224", "img_size": 224, "layers": list(layers), "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD)}


def farl_b16_params() -> dict[str, Any]:
    """``farl.farl`` params of FaRL-B/16's joint embedding (CLIP ViT-B/16's text tower)."""
    return {"embed_dim": 512, "text_width": 512, "text_layers": 12, "text_heads": 8, "context_length": 77}


def split_clip_state(state: dict[str, torch.Tensor], backbone: torch.nn.Module, *,
                     left_out: list[str] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """OpenAI-layout state -> (the facerep backbone's state dict, the joint embedding's). FaRL's MIM
    head keys (:data:`MIM_PREFIXES`) are dropped and their names appended to ``left_out``."""
    from timm.models.vision_transformer import _convert_openai_clip

    if "visual.class_embedding" not in state:
        raise DataError("not an OpenAI-CLIP / FaRL layout state dict: no 'visual.class_embedding'")
    mim = sorted(k for k in state if k.startswith(MIM_PREFIXES))
    if left_out is not None:
        left_out.extend(mim)
    state = {k: v for k, v in state.items() if not k.startswith(MIM_PREFIXES)}
    visual = _convert_openai_clip(state, backbone.model)
    proj = visual.pop("head.weight")  # (embed, width): visual.proj transposed
    visual.pop("head.bias", None)
    joint = {"image_proj.weight": proj, "logit_scale": state["logit_scale"]}
    skip = ("logit_scale", "input_resolution", "context_length", "vocab_size")  # OpenAI's JIT files carry the last three
    for k, v in state.items():
        if not k.startswith("visual.") and k not in skip and not k.endswith("attn_mask"):
            joint[f"text.transformer.{k}"] = v
    return {f"model.{k}": v for k, v in visual.items()}, joint


def import_clip(path: str | Path, *, left_out: list[str] | None = None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Build the facerep backbone and FaRL joint embedding and load a checkpoint into both (strict,
    after leaving out FaRL's MIM head, whose key names are appended to ``left_out``)."""
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.checkpoint import read_state_dict
    from facerep.config import structure
    from facerep_farl.farl import FaRLParams, JointEmbedding
    from facerep_farl.text import CaptionTokenizer

    state = read_state_dict(path)
    backbone = TimmBackbone(structure(clip_backbone_params(), TimmBackboneParams))
    params = structure(farl_b16_params(), FaRLParams)
    joint = JointEmbedding(backbone.embed_dim, params, CaptionTokenizer(params.context_length).vocab_size)
    b_state, j_state = split_clip_state(state, backbone, left_out=left_out)
    for module, sd, what in ((backbone, b_state, "image tower"), (joint, j_state, "text tower")):
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            raise DataError(f"{path}: the {what} does not fit CLIP ViT-B/16: {lines[1] if len(lines) > 1 else exc}") from None
    return backbone.eval(), joint.eval()


def write_import(path: str | Path, out: str | Path, *, left_out: list[str] | None = None) -> tuple[Path, Path]:
    """``import_clip`` + write ``out/backbone.safetensors`` and ``out/joint_embedding.safetensors``
    with their sidecars (evaluate with ``facerep eval ... --weights out/backbone.safetensors``);
    the names of the checkpoint keys not imported (FaRL's MIM head) are appended to ``left_out``."""
    from facerep.checkpoint import export_backbone, export_module
    from facerep.config import ComponentConfig

    backbone, joint = import_clip(path, left_out=left_out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src = {"imported_from": str(Path(path).resolve())}
    b = export_backbone(backbone, out / "backbone.safetensors", backbone=ComponentConfig("core.timm", clip_backbone_params()),
                        method="farl.farl", extra=src)
    j = export_module(joint, out / "joint_embedding.safetensors",
                      {"module": "joint_embedding", "method": "farl.farl", "objective": {"name": "farl.farl", "params": farl_b16_params()},
                       "backbone_file": b.name, **src})
    return b, j
