"""MCF, "Mask Contrastive Face" (Wang, Peng, Zhang, Yi, Liu, Wang, Wang, "Toward High Quality
Facial Representation Learning", ACM MM 2023, arXiv 2309.03575), as its official code trains it
(``specs/methods.md`` §3.2-3.4 and §8.4). Per step, for each image ``x`` and two independent random
75 % patch masks (view extras, drawn in the data loader):

1. the online ViT encodes the visible 25 % of ``x`` (MAE); an MAE decoder predicts every patch,
   giving the reconstruction ``x_hat``;
2. ``L_CPL``: ``x_hat`` and ``x`` are compared in the feature space of a frozen teacher
   (:mod:`facerep_mcf.teacher`, named in the config and the run's manifest);
3. ``L_con``: the online CLS (projector + predictor) against the momentum encoder's CLS of ``x``
   under the *other* mask (projector), InfoNCE with T = 0.2 scaled by 2T (:mod:`facerep_mcf.losses`);
4. ``L = 1000 L_CPL + L_con``; the momentum encoder and projector follow the online ones with
   m = 0.99 once per forward, as the official model does at the start of each forward (fixed m: the
   official cosine schedule is never called): under ``train.accumulate_steps`` k, k times per
   optimizer step (:meth:`MCFObjective.after_micro_batch`).

Checked against the official code (``nomewang/MCF`` ``bc8706f``) on tiny inputs: losses, gradients
and a 4-step accumulated trajectory (``tests/test_official_reference.py``).

Differences from the official code, on purpose: no distributed process group is needed (the
contrastive gather is a no-op in one process); the teacher is explicit; masks come from the data
loader's seeded RNG, so a resumed run draws the masks an uninterrupted one would.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import attrs
import torch
from torch import nn

from facerep.backbones.masking import keep_indices, vit_grid, vit_tokens
from facerep.config import FieldError, in_range, non_negative, positive
from facerep.engine.ema import momentum_update
from facerep.types import LossOutput
from facerep_mcf.decoder import MAEDecoder, sincos_pos_embed, unpatchify
from facerep_mcf.losses import feature_reconstruction_loss, masked_pair_contrastive_loss
from facerep_mcf.teacher import FeatureTeacher, TeacherParams
from facerep_mcf.views import MaskedPairViews

__all__ = ["MCFObjective", "MCFParams"]


def _crop_scale(instance: Any, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    lo, hi = value
    if not 0.0 < lo <= hi <= 1.0:
        raise FieldError(f"must satisfy 0 < low <= high <= 1, got {value!r}", attribute.name)


@attrs.frozen
class MCFParams:
    """Defaults are MCF's (ViT-B/16 at 224 px; ``specs/methods.md`` §3.2-3.4).

    Attributes:
        teacher: the frozen backbone whose features score reconstructions (required: MCF's code
            needs one and names none).
        mask_ratio: fraction of patches hidden from each encoder.
        decoder_width, decoder_depth, decoder_heads: the MAE decoder.
        proj_hidden, proj_dim: projector / predictor MLP widths (MoCo-v3 style).
        temperature: T of the contrastive term (scaled by 2T).
        momentum: m of the momentum encoder.
        feature_weight: the weight of ``L_CPL`` (1000).
        feature_axis: ``tokens`` normalises the teacher's features along the token axis as the
            official code does; ``channels`` normalises each token.
        fixed_pos_embed: MAE's fixed 2-D sine-cosine position embeddings in the encoder.
        init: ``official``: MCF's / MAE's initialisation (``models_mcf.py:65-90,235-256``) of the
            encoder, decoder, projector and predictor: every Linear xavier-uniform with zero bias,
            the patch embedding xavier-uniform on its flattened weight, ``cls_token`` N(0, 0.02),
            LayerNorm 1 / 0. ``timm``: timm's ViT initialisation for the encoder (trunc-normal
            0.02 Linears, ``cls_token`` 1e-6) and PyTorch's defaults elsewhere (what MCF used before
            this option).
        crop_scale: RandomResizedCrop area range; (1, 1) is MCF's plain resize.
        flip_p: horizontal flip probability.
    """

    teacher: TeacherParams
    mask_ratio: float = attrs.field(default=0.75, validator=in_range(0, 1))
    decoder_width: int = attrs.field(default=512, validator=positive)
    decoder_depth: int = attrs.field(default=8, validator=positive)
    decoder_heads: int = attrs.field(default=16, validator=positive)
    proj_hidden: int = attrs.field(default=4096, validator=positive)
    proj_dim: int = attrs.field(default=256, validator=positive)
    temperature: float = attrs.field(default=0.2, validator=positive)
    momentum: float = attrs.field(default=0.99, validator=in_range(0, 1))
    feature_weight: float = attrs.field(default=1000.0, validator=non_negative)
    feature_axis: Literal["tokens", "channels"] = "tokens"
    fixed_pos_embed: bool = True
    init: Literal["official", "timm"] = "official"
    crop_scale: tuple[float, float] = attrs.field(default=(1.0, 1.0), validator=_crop_scale)
    flip_p: float = attrs.field(default=0.5, validator=in_range(0, 1, hi_inclusive=True))

    @classmethod
    def tiny(cls) -> MCFParams:
        return cls(teacher=TeacherParams(model="resnet10t", layers=(1, 2)), decoder_width=32, decoder_depth=1, decoder_heads=2,
                   proj_hidden=64, proj_dim=16)

    @classmethod
    def tiny_backbone(cls) -> dict[str, Any]:
        """The ``core.timm`` params the contract suites build MCF on (it needs a ViT)."""
        return {"model": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "model_kwargs": {"depth": 2}}


def _mlp(d_in: int, hidden: int, d_out: int, *, last_bn: bool) -> nn.Sequential:
    """MoCo-v3's MLP (Chen, Xie, He, ICCV 2021): Linear-BN-ReLU-Linear, no biases, optional
    affine-free BN on the output (projector) or none (predictor)."""
    layers: list[nn.Module] = [nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                               nn.Linear(hidden, d_out, bias=False)]
    if last_bn:
        layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def _fix_sincos_pos_embed(vit: nn.Module, grid: tuple[int, int]) -> None:
    """MAE's table (``models_mcf.py:68-69``): zero for the CLS position, sin-cos for the patches."""
    pos = vit.pos_embed
    n = grid[0] * grid[1]
    with torch.no_grad():
        pos.zero_()
        pos[0, pos.shape[1] - n :] = sincos_pos_embed(grid, pos.shape[-1])
    pos.requires_grad_(False)


@torch.no_grad()
def _xavier_linears_(module: nn.Module) -> None:
    """MAE's ``_init_weights`` (``models_mcf.py:82-90,248-256``): Linear xavier-uniform with zero
    bias ("following official JAX ViT"), LayerNorm weight 1 and bias 0; nothing else touched."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def _official_vit_init_(vit: nn.Module) -> None:
    """The encoder part of MCF's ``Encoder.initialize_weights`` (``models_mcf.py:72-80``): the
    patch embedding like a Linear (xavier on the flattened ``(D, 3 p p)`` weight; its bias keeps
    ``nn.Conv2d``'s default, which MAE never touches), ``cls_token`` N(0, 0.02), then every Linear
    and LayerNorm as :func:`_xavier_linears_`."""
    proj = vit.patch_embed.proj
    proj.reset_parameters()  # PyTorch's Conv2d default for the bias, as the official PatchEmbed
    nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    if getattr(vit, "cls_token", None) is not None:
        nn.init.normal_(vit.cls_token, std=0.02)
    _xavier_linears_(vit)


class MCFObjective(nn.Module):
    def __init__(self, params: MCFParams, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = params
        self.backbone = backbone
        self.grid = vit_grid(backbone)  # a ConfigError for a CNN
        self.patch = int(backbone.model.patch_embed.patch_size[0])
        self.has_cls = getattr(backbone.model, "cls_token", None) is not None
        if params.fixed_pos_embed and getattr(backbone.model, "pos_embed", None) is not None:
            _fix_sincos_pos_embed(backbone.model, self.grid)
        d = backbone.embed_dim
        self.decoder = MAEDecoder(d, self.grid, self.patch, width=params.decoder_width, depth=params.decoder_depth,
                                  heads=params.decoder_heads, num_prefix_tokens=backbone.num_prefix_tokens)
        self.projector = _mlp(d, params.proj_hidden, params.proj_dim, last_bn=True)
        self.predictor = _mlp(params.proj_dim, params.proj_hidden, params.proj_dim, last_bn=False)
        if params.init == "official":
            _official_vit_init_(backbone.model)
            for part in (self.decoder, self.projector, self.predictor):  # mask_token: N(0, 0.02) in MAEDecoder, as :243
                _xavier_linears_(part)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        # Frozen and reloadable from its file: kept out of the state dict (checkpoints stay small)
        # and out of the optimizer; ``_apply`` moves it with the objective.
        self.__dict__["teacher"] = FeatureTeacher(params.teacher)

    def _apply(self, fn: Any, recurse: bool = True) -> MCFObjective:
        super()._apply(fn, recurse)
        self.teacher._apply(fn)
        return self

    def view_transform(self) -> MaskedPairViews:
        side = self.grid[0] * self.patch
        return MaskedPairViews(size=side, n_patches=self.grid[0] * self.grid[1], mask_ratio=self.params.mask_ratio,
                               crop_scale=tuple(self.params.crop_scale), flip_p=self.params.flip_p)

    def _cls(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] if self.has_cls else tokens[:, self.backbone.num_prefix_tokens :].mean(1)

    def forward(self, views: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None) -> LossOutput:
        if extras is None or "mask" not in extras:
            raise ValueError("MCF needs extras['mask'] (B, 2, N) from its view transform (facerep >= 1.2 runner)")
        x, mask = views[0], extras["mask"]
        keep_online, keep_target = keep_indices(mask[:, 0]), keep_indices(mask[:, 1])
        latent = vit_tokens(self.backbone, x, keep=keep_online)
        x_hat = unpatchify(self.decoder(latent, keep_online), self.grid, self.patch)
        with torch.no_grad():
            target_feats = self.teacher(self.backbone.unpreprocess(x))
        recon_feats = self.teacher(self.backbone.unpreprocess(x_hat))
        loss_feat = feature_reconstruction_loss(recon_feats, target_feats, axis=self.params.feature_axis)

        q = self.predictor(self.projector(self._cls(latent)))
        with torch.no_grad():
            k = self.target_projector(self._cls(vit_tokens(self.target_backbone, x, keep=keep_target)))
        loss_con = masked_pair_contrastive_loss(q, k, self.params.temperature)
        loss = self.params.feature_weight * loss_feat + loss_con
        with torch.no_grad():
            qn = torch.nn.functional.normalize(q.float(), dim=1)
            err = (x_hat.float() - x.float()).pow(2).mean(1)  # (B, H, W): pixel error on masked patches, logged only
            rows = err.view(err.shape[0], self.grid[0], self.patch, self.grid[1], self.patch).mean((2, 4)).flatten(1)
            masked_mse = (rows * mask[:, 0]).sum() / mask[:, 0].sum().clamp(min=1)
        return LossOutput(loss, {"loss_feature": float(loss_feat.detach()), "loss_contrast": float(loss_con.detach()),
                                 "q_std": float(qn.std(0).mean()), "masked_mse": float(masked_mse)})

    def before_optimizer_step(self, step: int) -> None:
        pass

    @torch.no_grad()
    def after_micro_batch(self, step: int, micro: int, n_micro: int) -> None:
        """The official model moves its target at the start of every forward
        (``models_mcf.py:218-221,324-326``): under gradient accumulation ``n`` times per optimizer
        step (measured on the official code: 8 micro-batches move it by 1 - 0.99^8). Between
        micro-batches the online weights have not changed, so updating here is the same."""
        if micro < n_micro - 1:
            self.after_optimizer_step(step, 0)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        momentum_update(self.target_backbone, self.backbone, self.params.momentum)
        momentum_update(self.target_projector, self.projector, self.params.momentum)

    def exported_backbone(self) -> nn.Module:
        return self.backbone

    def manifest(self) -> dict[str, Any]:
        teacher = self.params.teacher
        return {"teacher": {**self.teacher.source, "layers": list(teacher.layers), "input_size": teacher.input_size}}
