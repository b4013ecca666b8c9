"""The frozen backbone in whose feature space MCF scores its reconstructions.

MCF's code loads a MoCo-v3 ViT-B/16 (``--cpl_ckpt``) that the paper and the repository never name
(``specs/methods.md`` §3.7). Here the teacher is explicit: either a ``backbone.safetensors`` that a
facerep run exported (its sidecar names the architecture; e.g. FRL's MoCo-v2 ResNet-18), or a timm
model by name with an optional local checkpoint. Its source and SHA-256 go to the run's manifest.

Features: for each chosen layer, the token sequence ``(B, T, C)``: a ViT's CLS token followed by its
patch tokens (MCF uses all 197 tokens), or a CNN stage's map flattened to ``h * w`` tokens.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from facerep.config import FieldError, positive
from facerep.errors import ConfigError, DataError

__all__ = ["FeatureTeacher", "TeacherParams"]


@attrs.frozen
class TeacherParams:
    """Exactly one of ``weights`` / ``model``.

    Attributes:
        weights: a facerep-exported ``backbone.safetensors`` (with its ``.json`` sidecar).
        model: a timm model name; ``checkpoint`` then gives its weights (a timm state dict as
            safetensors, or a ``.pth`` read with ``weights_only=True``). No checkpoint: random
            weights (only sensible in tests; a warning says so).
        layers: 0-based block (ViT) or stage (CNN) indices whose features are compared
            (MCF: ViT-B blocks 2, 5, 8, 11).
        input_size: the teacher sees images resized to this side (MCF: 224); None: as given.
        resize: how they are resized: ``nearest`` (MCF: ``F.interpolate(x, size=224)``, PyTorch's
            default mode, ``models_moco.py:140``) or ``bilinear``. Only matters when the student's
            side differs from ``input_size``.
        img_size: for a timm ViT ``model``, the size its position embeddings are built for.
    """

    weights: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    layers: tuple[int, ...] = (2, 5, 8, 11)
    input_size: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive))
    img_size: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive))
    resize: Literal["nearest", "bilinear"] = "nearest"

    def __attrs_post_init__(self) -> None:
        if (self.weights is None) == (self.model is None):
            raise FieldError("give exactly one of 'weights' (a facerep backbone.safetensors) or 'model' (a timm name)", "weights")
        if self.checkpoint is not None and self.model is None:
            raise FieldError("'checkpoint' goes with 'model' (a facerep export carries its own weights in 'weights')", "checkpoint")
        if not self.layers:
            raise FieldError("name at least one layer", "layers")


def _path(text: str, field: str) -> Path:
    """``$VAR`` / ``${VAR}`` / ``~`` expanded (``$FACEREP_DATA`` defaults to ``../shared/data``);
    an unset variable is an error naming the field."""
    from facerep.data.folder import expand_path

    path = expand_path(text)
    if "$" in str(path):
        raise ConfigError(f"objective.params.teacher.{field}: {text!r} names an unset environment variable")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureTeacher(nn.Module):
    """A frozen facerep backbone returning the token features of the chosen layers."""

    def __init__(self, params: TeacherParams) -> None:
        super().__init__()
        from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
        from facerep.checkpoint import load_backbone, read_sidecar

        self.params = params
        layers = list(params.layers)
        if params.weights is not None:
            path = _path(params.weights, "weights")
            self.backbone = load_backbone(path, params={"layers": layers})
            self.source: dict[str, Any] = {"weights": str(path), "sha256": _sha256(path), "backbone": read_sidecar(path)["backbone"]}
        else:
            assert params.model is not None
            with torch.random.fork_rng(devices=[]):  # a random teacher is the same in every run, whatever the run's seed
                torch.manual_seed(0)
                self.backbone = TimmBackbone(TimmBackboneParams(model=params.model, layers=tuple(layers), img_size=params.img_size))
            self.source = {"model": params.model}
            if params.checkpoint is None:
                warnings.warn(f"MCF teacher {params.model!r} has random weights (no 'checkpoint'): its feature space teaches little",
                              stacklevel=2)
                self.source["checkpoint"] = None
            else:
                path = _path(params.checkpoint, "checkpoint")
                from facerep.checkpoint import read_state_dict

                state = read_state_dict(path, what="teacher checkpoint")
                missing, unexpected = self.backbone.model.load_state_dict(state, strict=False)
                missing = [k for k in missing if not k.startswith(("head.", "fc."))]  # classifier heads are dropped
                if missing:
                    raise DataError(f"{path}: does not fit timm {params.model!r}: missing {', '.join(missing[:5])}"
                                    f"{' ...' if len(missing) > 5 else ''}")
                self.source.update(checkpoint=str(path), sha256=_sha256(path), ignored_keys=len(unexpected))
        n_layers = len(self.backbone.layer_dims)
        if n_layers != len(layers):
            raise ConfigError(f"objective.params.teacher.layers: {layers} does not fit the teacher")
        self.backbone.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureTeacher:  # always frozen: BN statistics never move
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: a float batch in 0-255 units (``student.unpreprocess(views)``); returns one
        ``(B, T, C)`` token tensor per layer."""
        x = self.backbone.preprocess(x)
        size = self.params.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            if self.params.resize == "nearest":
                x = F.interpolate(x, size=(size, size), mode="nearest")
            else:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if hasattr(self.backbone, "forward_layers"):  # core.timm: stop after the last layer needed
            maps, cls = self.backbone.forward_layers(x)
        else:
            feats = self.backbone(x)
            maps, cls = feats.layers, feats.layer_cls
        out = []
        for i, fmap in enumerate(maps):
            tokens = fmap.flatten(2).transpose(1, 2)
            if cls:
                tokens = torch.cat([cls[i].unsqueeze(1), tokens], dim=1)
            out.append(tokens)
        return out
