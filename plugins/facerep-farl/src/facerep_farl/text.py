"""FaRL's text side: CLIP's byte-pair tokenizer and CLIP's causal text transformer.

Both come from ``open_clip_torch``: its wheel ships OpenAI CLIP's BPE vocabulary (49,408 tokens,
``bpe_simple_vocab_16e6.txt.gz``; nothing is downloaded) and defines the text tower with OpenAI's
parameter names, so FaRL / OpenAI-CLIP checkpoints load into it key for key (FaRL's text tower is
CLIP ViT-B/16's: 12 layers, width 512, 8 heads, context 77; ``specs/methods.md`` §2.2). The pooled
text feature is the final-LayerNorm output at the end-of-text token (the highest token id in a row),
projected to the joint space.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import torch
from torch import nn

__all__ = ["CaptionTokenizer", "TextTower"]


@lru_cache(maxsize=1)
def _bpe():  # building the BPE tables takes ~0.3 s; one per process
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class CaptionTokenizer:
    """Caption <-> ``(context_length,)`` int64 ids: ``<start> bpe(caption) <end> 0 ...`` (CLIP's
    layout; captions longer than the context are cut and end with ``<end>``)."""

    def __init__(self, context_length: int = 77) -> None:
        self.context_length = context_length

    def __getstate__(self) -> dict:  # data-loader workers rebuild the BPE tables themselves
        return {"context_length": self.context_length}

    def __setstate__(self, state: dict) -> None:
        self.context_length = state["context_length"]

    @property
    def vocab_size(self) -> int:
        return len(_bpe().encoder)

    def __call__(self, caption: str) -> np.ndarray:
        bpe = _bpe()
        ids = [bpe.sot_token_id, *bpe.encode(caption), bpe.eot_token_id]
        if len(ids) > self.context_length:
            ids = ids[: self.context_length]
            ids[-1] = bpe.eot_token_id
        out = np.zeros(self.context_length, dtype=np.int64)
        out[: len(ids)] = ids
        return out

    def decode(self, ids: np.ndarray | torch.Tensor) -> str:
        """The caption back, lower-cased and whitespace-normalised as CLIP's BPE cleans it (its
        word-level decoder spaces out punctuation; the spaces it adds are taken back out)."""
        bpe = _bpe()
        ids = [int(i) for i in ids if int(i) not in (0, bpe.sot_token_id, bpe.eot_token_id)]
        text = bpe.decode(ids).strip()
        text = re.sub(r"(\w) ([-'./]) ?(?=\w)", r"\1\2", text)
        text = re.sub(r" ([,.!?;:)])", r"\1", text)
        return re.sub(r"([(]) ", r"\1", text)


class TextTower(nn.Module):
    """CLIP's text transformer (``open_clip.transformer.TextTransformer``, QuickGELU as OpenAI's)."""

    def __init__(self, *, width: int = 512, layers: int = 12, heads: int = 8, context_length: int = 77, vocab_size: int = 49408,
                 embed_dim: int = 512) -> None:
        super().__init__()
        from open_clip.transformer import QuickGELU, TextTransformer

        self.transformer = TextTransformer(context_length=context_length, vocab_size=vocab_size, width=width, heads=heads, layers=layers,
                                           output_dim=embed_dim, act_layer=QuickGELU)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, context_length)`` int64 -> ``(B, embed_dim)``."""
        return self.transformer(ids)
