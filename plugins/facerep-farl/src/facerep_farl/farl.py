"""FaRL (Zheng et al., "General Facial Representation Learning in a Visual-Linguistic Manner",
CVPR 2022, arXiv 2112.03109): image-text contrast + masked image modelling on one ViT
(``specs/methods.md`` §2.2-2.3 and §8.3). Per step, for images ``x`` with captions ``t``:

1. the clean ``x`` and a copy whose blockwise-masked patches are replaced by a learned mask
   embedding go through the image tower in one batched pass;
2. ``L_ITC``: CLS of the clean copy -> (the tower's final LayerNorm) -> projection, against the text
   tower's end-of-text feature, symmetric InfoNCE with a learnable scale capped at 100;
3. ``L_MIM``: the masked copy's token sequence as the last block leaves it (the raw residual
   stream, *before* the tower's final LayerNorm) -> a small transformer of CLIP blocks -> LayerNorm
   -> linear over the visual vocabulary, cross-entropy at the masked positions against the patch
   tokenizer's ids;
4. ``L = L_ITC + lambda L_MIM`` (lambda = 1 [M]).

FaRL's pre-training code is unreleased (FaRL issue #22), but its model file is: the MIM branch
follows FacePerceiver/FaRL 3fb4694 ``farl/network/farl/model.py`` — mask token ``width^-0.5 * randn``
replacing patch embeddings before CLS and position embedding (``:320, 370-376``), one pass over the
clean and masked copies (``:379``), the MIM transformer reading the raw transformer output including
CLS (``:387-389``, no ``ln_post``), then CLS dropped, ``ln_lm`` and ``lm_head`` (``:390-395``); its
blocks are CLIP's ``ResidualAttentionBlock`` (QuickGELU, LayerNorm eps 1e-5, ``:165-216``) with
``Transformer``'s init (``:241-248``). The MIM depth, mask ratio and tokenizer are the brief's [M]
values (1 layer, ~40 % blockwise, 8,192 dVAE codes); the tokenizer here is a k-means codebook
(:mod:`facerep_farl.patch_tokenizer`) unless one is given.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import attrs
import torch
from timm.layers import QuickGELU
from timm.models.vision_transformer import Block
from torch import nn

from facerep.backbones.masking import vit_grid, vit_tokens
from facerep.config import in_range, positive
from facerep.errors import ConfigError
from facerep.types import LossOutput, ParamGroup
from facerep_farl.losses import image_text_contrastive_loss, masked_token_loss
from facerep_farl.patch_tokenizer import KMeansPatchTokenizer, VQPatchTokenizer
from facerep_farl.text import CaptionTokenizer, TextTower
from facerep_farl.views import CaptionedMaskedViews

__all__ = ["FaRLObjective", "FaRLParams", "JointEmbedding"]


@attrs.frozen
class FaRLParams:
    """Defaults are FaRL-B/16's (CLIP ViT-B/16 text tower and joint space; [M] MIM settings).

    Attributes:
        embed_dim: joint image-text space.
        text_width, text_layers, text_heads, context_length: the text transformer.
        init_temperature: the scale starts at ``1 / init_temperature`` (CLIP: 0.07).
        max_logit_scale: cap of the scale (CLIP: 100).
        mim_weight: lambda of ``L_MIM``; 0 trains image-text contrast only.
        mim_layers: transformer blocks of the MIM head.
        mask_ratio, min_block: BEiT blockwise masking of ``round(mask_ratio * N)`` patches in blocks
            of at least ``min_block`` (BEiT: 75 of 196 = 38 %, 16).
        mask_style: ``beit``: BEiT's ``MaskingGenerator`` (stops when no block fits, so a mask may
            hold a few patches less; blocks never span the grid); ``exact``: facerep's
            ``block_mask`` (exact count, random single-patch top-up; :mod:`facerep_farl.views`).
        vocab_size: visual tokens (the k-means codebook's size; DALL-E's dVAE has 8,192).
        codebook: the k-means tokenizer's saved codebook (safetensors ``centroids``; None fits one
            on the first batch), or with ``tokenizer_weights`` a VQ codebook (``codebook (K, C)``).
        codebook_pool: k-means: patches are average-pooled to at most this side before quantisation.
        tokenizer_weights: a user's dVAE/VQ encoder exported as a facerep ``backbone.safetensors``
            (its tokens must form the image tower's patch grid); None: the k-means tokenizer.
        crop_scale, flip_p: RandomResizedCrop area range and horizontal flip probability.
    """

    embed_dim: int = attrs.field(default=512, validator=positive)
    text_width: int = attrs.field(default=512, validator=positive)
    text_layers: int = attrs.field(default=12, validator=positive)
    text_heads: int = attrs.field(default=8, validator=positive)
    context_length: int = attrs.field(default=77, validator=positive)
    init_temperature: float = attrs.field(default=0.07, validator=positive)
    max_logit_scale: float = attrs.field(default=100.0, validator=positive)
    mim_weight: float = attrs.field(default=1.0, validator=in_range(0, math.inf))
    mim_layers: int = attrs.field(default=1, validator=positive)
    mask_ratio: float = attrs.field(default=0.4, validator=in_range(0, 1, lo_inclusive=False))
    min_block: int = attrs.field(default=16, validator=positive)
    mask_style: Literal["beit", "exact"] = "beit"
    vocab_size: int = attrs.field(default=1024, validator=positive)
    codebook: str | None = None
    codebook_pool: int = attrs.field(default=4, validator=positive)
    tokenizer_weights: str | None = None
    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip_p: float = attrs.field(default=0.5, validator=in_range(0, 1, hi_inclusive=True))

    @classmethod
    def tiny(cls) -> FaRLParams:
        return cls(embed_dim=16, text_width=32, text_layers=1, text_heads=2, context_length=16, min_block=2, vocab_size=8, codebook_pool=2)

    @classmethod
    def tiny_backbone(cls) -> dict[str, Any]:
        """The ``core.timm`` params the contract suites build FaRL on (it needs a ViT)."""
        return {"model": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "model_kwargs": {"depth": 2}}


class JointEmbedding(nn.Module):
    """The image-text part of FaRL besides the image tower: the image projection (CLIP's
    ``visual.proj``), the text tower and the logit scale ``t`` (``s = exp(t)``). Exported with the
    backbone as ``joint_embedding.safetensors`` for zero-shot protocols."""

    def __init__(self, image_width: int, params: FaRLParams, vocab_size: int) -> None:
        super().__init__()
        self.max_logit_scale = params.max_logit_scale
        self.image_proj = nn.Linear(image_width, params.embed_dim, bias=False)
        self.text = TextTower(width=params.text_width, layers=params.text_layers, heads=params.text_heads,
                              context_length=params.context_length, vocab_size=vocab_size, embed_dim=params.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / params.init_temperature)))
        nn.init.normal_(self.image_proj.weight, std=image_width**-0.5)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def encode_image(self, cls: torch.Tensor) -> torch.Tensor:
        """The image tower's final (normed) CLS token -> joint space (not unit-normalised)."""
        return self.image_proj(cls)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text(ids)


class FaRLObjective(nn.Module):
    def __init__(self, params: FaRLParams, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = params
        self.backbone = backbone
        self.grid = vit_grid(backbone)  # a ConfigError for a CNN
        self.patch = int(backbone.model.patch_embed.patch_size[0])
        d = backbone.embed_dim
        self.caption_tokenizer = CaptionTokenizer(params.context_length)
        self.joint = JointEmbedding(d, params, self.caption_tokenizer.vocab_size)
        # FaRL model.py:320: width^-0.5 * randn (std 0.036 at width 768)
        self.mask_token = nn.Parameter(d**-0.5 * torch.randn(d))
        heads = int(backbone.model.blocks[0].attn.num_heads)
        # FaRL's lm_transformer: CLIP ResidualAttentionBlocks (model.py:188-216: QuickGELU, LN eps 1e-5)
        self.mim_blocks = nn.Sequential(*[Block(d, heads, 4.0, qkv_bias=True, act_layer=QuickGELU,
                                                norm_layer=partial(nn.LayerNorm, eps=1e-5)) for _ in range(params.mim_layers)])
        self.mim_norm = nn.LayerNorm(d, eps=1e-5)
        self.mim_head = nn.Linear(d, params.vocab_size)
        self._init_mim()
        if params.tokenizer_weights is not None:
            if params.codebook is None:
                raise ConfigError("objective.params.codebook: a VQ tokenizer (tokenizer_weights) needs its codebook file")
            self.patch_tokenizer: nn.Module = VQPatchTokenizer(weights=params.tokenizer_weights, codebook=params.codebook,
                                                               n_patches=self.grid[0] * self.grid[1], vocab_size=params.vocab_size)
        else:
            self.patch_tokenizer = KMeansPatchTokenizer(patch=self.patch, vocab_size=params.vocab_size, pool=params.codebook_pool,
                                                        codebook=params.codebook)

    @torch.no_grad()
    def _init_mim(self) -> None:
        """FaRL's init of the MIM head (model.py:241-248, 323-332): every Linear N(0, 0.02) truncated
        at +-2, biases 0; the attention's fused q/k/v projection keeps ``nn.MultiheadAttention``'s
        Xavier-uniform ``in_proj_weight`` (it is not an ``nn.Linear`` there); norms 1 / 0."""
        for m in [*self.mim_blocks.modules(), self.mim_head]:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for block in self.mim_blocks:
            nn.init.xavier_uniform_(block.attn.qkv.weight)

    def view_transform(self) -> CaptionedMaskedViews:
        return CaptionedMaskedViews(size=self.grid[0] * self.patch, grid=self.grid, mask_ratio=self.params.mask_ratio,
                                    min_block=self.params.min_block, tokenizer=self.caption_tokenizer,
                                    crop_scale=tuple(self.params.crop_scale), flip_p=self.params.flip_p,
                                    mask_style=self.params.mask_style)

    def param_groups(self) -> list[ParamGroup]:
        """CLIP's rule: no weight decay on the logit scale, gains and biases (here: every 0/1-D
        tensor outside the backbone, which follows ``optimizer.no_decay``)."""
        flat = [p for n, p in self.named_parameters() if not n.startswith("backbone.") and p.ndim < 2 and p.requires_grad]
        return [ParamGroup(params=flat, weight_decay=0.0, name="farl 0/1-D")]

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> joint-space embeddings (not unit-normalised)."""
        return self.joint.encode_image(vit_tokens(self.backbone, x)[:, 0])

    def forward(self, views: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None) -> LossOutput:
        if extras is None or "text" not in extras or "mim_mask" not in extras:
            raise ValueError("FaRL needs extras 'text' and 'mim_mask' from its view transform (facerep >= 1.2 runner)")
        x, ids, mask = views[0], extras["text"], extras["mim_mask"]
        b, prefix = x.shape[0], self.backbone.num_prefix_tokens
        mim = self.params.mim_weight > 0
        # one pass over [clean; masked] (FaRL's forward_mim): the clean half has nothing masked
        both = torch.cat([x, x]) if mim else x
        # the MIM head reads the last block's output before the final norm (FaRL model.py:387-389);
        # the ITC feature is the normed CLS (model.py:399-402)
        stream = vit_tokens(self.backbone, both, mask=torch.cat([torch.zeros_like(mask), mask]) if mim else torch.zeros_like(mask),
                            mask_token=self.mask_token, final_norm=False)
        u = self.joint.encode_image(self.backbone.model.norm(stream[:b, 0]))
        w = self.joint.encode_text(ids)
        loss_itc = image_text_contrastive_loss(u, w, self.joint.scale())
        logs = {"loss_itc": float(loss_itc.detach()), "logit_scale": float(self.joint.scale().detach())}
        loss = loss_itc
        if mim:  # with mim_weight 0 (image-text contrast only) the masked copy is not computed
            logits = self.mim_head(self.mim_norm(self.mim_blocks(stream[b:])[:, prefix:]))
            targets = self.patch_tokenizer(self.backbone.unpreprocess(x))
            loss_mim = masked_token_loss(logits, targets, mask)
            loss = loss + self.params.mim_weight * loss_mim
            logs["loss_mim"] = float(loss_mim.detach())
            logs["mim_acc"] = float((logits[mask].argmax(-1) == targets[mask]).float().mean())
        with torch.no_grad():
            sims = torch.nn.functional.normalize(u.float(), dim=1) @ torch.nn.functional.normalize(w.float(), dim=1).T
            logs["itc_acc"] = float((sims.argmax(1) == torch.arange(b, device=x.device)).float().mean())
        return LossOutput(loss, logs)

    def after_micro_batch(self, step: int, micro: int, n_micro: int) -> None:
        """Nothing changes per forward (open_clip clamps t after the optimizer step)."""

    def before_optimizer_step(self, step: int) -> None:
        pass

    @torch.no_grad()
    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        self.joint.logit_scale.clamp_(0.0, math.log(self.params.max_logit_scale))  # CLIP clamps t after each step

    def exported_backbone(self) -> nn.Module:
        return self.backbone

    def exports(self) -> dict[str, nn.Module]:
        return {"joint_embedding": self.joint}
