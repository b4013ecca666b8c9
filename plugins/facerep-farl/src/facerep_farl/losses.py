"""FaRL's loss terms (Zheng et al., "General Facial Representation Learning in a
Visual-Linguistic Manner", CVPR 2022, arXiv 2112.03109; ``specs/methods.md`` §0.6, §0.7, §2.3).

Image-text contrast (CLIP, Radford et al. 2021, Fig. 3): unit image embeddings ``u_i`` and text
embeddings ``w_j`` of the *global* batch, logits ``s u_i . w_j`` with a learnable scale
``s = exp(t)`` capped at 100::

    L_ITC = 1/2 [ CE(s U W^T, diag) + CE(s W U^T, diag) ]

Each process scores its own rows against the gathered columns (gradients flow back through the
gather), so the mean of the processes' losses is the one-process loss of the global batch.

Masked image modelling (BEiT, Bao et al. 2022, eq. 1): cross-entropy of the visual-token id of each
masked patch, averaged over the masked patches of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facerep import dist

__all__ = ["image_text_contrastive_loss", "masked_token_loss"]


def image_text_contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``image``, ``text``: this process's ``(B, d)`` embeddings (normalised here); ``logit_scale``: ``s``."""
    u = F.normalize(image.float(), dim=1)
    w = F.normalize(text.float(), dim=1)
    u_all, w_all = dist.all_gather_with_grad(u), dist.all_gather_with_grad(w)
    labels = torch.arange(u.shape[0], device=u.device) + dist.rank() * u.shape[0]
    s = logit_scale.float()
    return 0.5 * (F.cross_entropy(s * u @ w_all.T, labels) + F.cross_entropy(s * w @ u_all.T, labels))


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``logits`` ``(B, N, V)``, ``targets`` ``(B, N)`` ids, ``mask`` ``(B, N)`` bool (True: masked)."""
    return F.cross_entropy(logits[mask].float(), targets[mask])
