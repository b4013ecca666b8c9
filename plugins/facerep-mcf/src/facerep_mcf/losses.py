"""MCF's two loss terms (Wang et al., "Toward High Quality Facial Representation Learning", ACM MM
2023, arXiv 2309.03575), as the official code computes them (``specs/methods.md`` §3.3).

Feature reconstruction ("CPL"): the reconstruction ``x_hat`` and the image ``x`` go through a
frozen teacher; at each chosen layer ``l`` the ``(B, T, C)`` token tensors are L2-normalised along
the *token* axis (dim 1, as the official code does; ``axis="channels"`` normalises each token
instead) and compared by mean squared error::

    L_CPL = sum_l MSE( n(F_l(x_hat)), sg[n(F_l(x))] )

Masked-pair contrast: ``q`` (online CLS -> projector -> predictor) and ``k`` (momentum encoder on an
independently masked copy -> its projector), unit vectors, ``k`` gathered from every process::

    L_con = 2 T * CE( q k_all^T / T, index of the sample's own key )

(one direction, T = 0.2). Total ``L = 1000 L_CPL + L_con``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from facerep import dist

__all__ = ["feature_reconstruction_loss", "masked_pair_contrastive_loss"]


def feature_reconstruction_loss(recon: list[torch.Tensor], target: list[torch.Tensor], *,
                                axis: Literal["tokens", "channels"] = "tokens") -> torch.Tensor:
    """Sum over layers of the MSE between normalised teacher features of ``x_hat`` and of ``x``."""
    dim = 1 if axis == "tokens" else 2
    total = recon[0].new_zeros((), dtype=torch.float32)
    for r, t in zip(recon, target, strict=True):
        total = total + F.mse_loss(F.normalize(r.float(), dim=dim), F.normalize(t.detach().float(), dim=dim))
    return total


def masked_pair_contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """``2 T * CE(q k^T / T)`` with ``k`` all-gathered (no gradient); sample ``i`` of rank ``r``'s
    positive is key ``r * B + i``."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    keys = dist.all_gather(k)
    logits = q @ keys.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + dist.rank() * q.shape[0]
    return 2 * temperature * F.cross_entropy(logits, labels)
