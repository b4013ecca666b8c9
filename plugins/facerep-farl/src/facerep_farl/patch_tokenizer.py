"""Discrete patch targets for FaRL's masked image modelling.

FaRL (after BEiT) predicts the id a frozen DALL-E dVAE gives each masked patch (8,192 codes;
``specs/methods.md`` §0.7); that tokenizer is a download. The offline default here is a k-means
codebook of patch appearance: each ``p x p`` RGB patch (values in [0, 1]) is average-pooled to at
most ``pool x pool`` and assigned to its nearest centroid. The codebook is either read from a file
(``codebook``: a safetensors with ``centroids (K, d)``, e.g. one written by a previous run) or fitted
on the first training batch of the pretraining pool (k-means++ seeding and Lloyd iterations, on the
batch gathered from every process, so every process fits the same codebook), then kept in the
objective's state: checkpoints and resumes carry it.

Like the dVAE's, these ids describe local colour and structure, so predicting them from context is
a low-level target; ``docs/methods/farl.md`` says what that changes at CPU scale.

A user's own discrete tokenizer (a dVAE or VQ encoder) plugs in as :class:`VQPatchTokenizer`: its
encoder is any facerep backbone exported to ``backbone.safetensors`` (a plugin can register the
architecture as a backbone) whose output tokens form the ViT's patch grid, and its codebook is a
safetensors with ``codebook (K, C)``; ids are the nearest codebook entries of the encoder's tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facerep import dist
from facerep.errors import DataError

__all__ = ["KMeansPatchTokenizer", "VQPatchTokenizer", "kmeans"]


def kmeans(x: torch.Tensor, k: int, *, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """``(n, d)`` -> ``(k, d)`` centroids: k-means++ seeding (Arthur & Vassilvitskii 2007), then
    Lloyd iterations; an empty cluster takes the point farthest from its centroid."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = x.float()
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: {n} points for {k} centroids")
    centroids = x[torch.randint(n, (1,), generator=g)]
    d2 = torch.cdist(x, centroids).squeeze(1).pow(2)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / n)
        nxt = x[torch.multinomial(p.cpu(), 1, generator=g).to(x.device)]
        centroids = torch.cat([centroids, nxt])
        d2 = torch.minimum(d2, torch.cdist(x, nxt).squeeze(1).pow(2))
    for _ in range(iters):
        dists = torch.cdist(x, centroids)
        assign = dists.argmin(1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = counts == 0
        centroids = torch.where(empty.unsqueeze(1), centroids, sums / counts.clamp(min=1).unsqueeze(1))
        if empty.any():  # refill empty clusters with the worst-fitted points
            worst = dists.gather(1, assign.unsqueeze(1)).squeeze(1).topk(int(empty.sum())).indices
            centroids[empty] = x[worst]
    return centroids


class KMeansPatchTokenizer(nn.Module):
    """``(B, 3, H, W)`` images in 0-255 -> ``(B, N)`` int64 codebook ids of their ``patch`` x
    ``patch`` patches (row-major, the ViT's order)."""

    def __init__(self, *, patch: int, vocab_size: int, pool: int = 4, codebook: str | None = None, fit_samples: int = 65536,
                 seed: int = 0) -> None:
        super().__init__()
        self.patch, self.vocab_size, self.pool = patch, vocab_size, min(pool, patch)
        self.fit_samples, self.seed = fit_samples, seed
        d = 3 * self.pool * self.pool
        self.register_buffer("centroids", torch.zeros(vocab_size, d))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        if codebook is not None:
            self.load_codebook(Path(codebook))

    def load_codebook(self, path: Path) -> None:
        from safetensors.torch import load_file

        if not path.is_file():
            raise DataError(f"FaRL codebook not found: {path}")
        try:
            c = load_file(str(path))["centroids"]
        except Exception as exc:
            raise DataError(f"{path}: not a codebook safetensors with 'centroids' ({type(exc).__name__}: {exc})") from None
        if tuple(c.shape) != tuple(self.centroids.shape):
            raise DataError(f"{path}: centroids {tuple(c.shape)}, expected {tuple(self.centroids.shape)} (vocab_size, 3 * pool^2)")
        self.centroids.copy_(c)
        self.fitted.fill_(True)

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in 0-255 -> ``(B, N, 3 * pool^2)`` pooled patch colours in [0, 1]."""
        side = (images.shape[-2] // self.patch * self.pool, images.shape[-1] // self.patch * self.pool)
        x = F.adaptive_avg_pool2d(images.float() / 255.0, side)
        b, c, h, w = x.shape
        gh, gw = h // self.pool, w // self.pool
        x = x.view(b, c, gh, self.pool, gw, self.pool).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, gh * gw, c * self.pool * self.pool)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Fit the codebook on the patches of ``images`` gathered from every process."""
        feats = dist.all_gather(self.patch_features(images).flatten(0, 1).contiguous())
        if feats.shape[0] > self.fit_samples:
            idx = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(self.seed))[: self.fit_samples]
            feats = feats[idx.to(feats.device)]
        self.centroids.copy_(kmeans(feats, self.vocab_size, seed=self.seed))
        self.fitted.fill_(True)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            self.fit(images)
        feats = self.patch_features(images)
        return torch.cdist(feats, self.centroids.unsqueeze(0).expand(feats.shape[0], -1, -1)).argmin(-1)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({"centroids": self.centroids.cpu().contiguous()}, str(path))


class VQPatchTokenizer(nn.Module):
    """``(B, 3, H, W)`` images in 0-255 -> ``(B, N)`` ids: a frozen encoder's ``(B, N, C)`` tokens
    quantised to the nearest of ``K`` codebook vectors."""

    def __init__(self, *, weights: str, codebook: str, n_patches: int, vocab_size: int) -> None:
        super().__init__()
        from safetensors.torch import load_file

        from facerep.checkpoint import load_backbone
        from facerep.data.folder import expand_path

        self.encoder = load_backbone(expand_path(weights)).requires_grad_(False).eval()
        path = expand_path(codebook)
        if not path.is_file():
            raise DataError(f"VQ codebook not found: {path}")
        try:
            book = load_file(str(path))["codebook"]
        except Exception as exc:
            raise DataError(f"{path}: not a safetensors with 'codebook' (K, C) ({type(exc).__name__}: {exc})") from None
        if book.shape[0] != vocab_size:
            raise DataError(f"{path}: {book.shape[0]} codes, but objective.params.vocab_size is {vocab_size}")
        self.register_buffer("codebook", book.float())
        self.n_patches = n_patches

    def train(self, mode: bool = True) -> VQPatchTokenizer:  # frozen: BN statistics never move
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(self.encoder.preprocess(images)).tokens
        if tokens is None or tokens.shape[1] != self.n_patches or tokens.shape[-1] != self.codebook.shape[1]:
            got = None if tokens is None else tuple(tokens.shape[1:])
            raise DataError(f"VQ tokenizer: the encoder gives tokens {got}, expected ({self.n_patches}, {self.codebook.shape[1]}) "
                            f"(one per patch of the image tower, codebook width)")
        flat = tokens.float().flatten(0, 1)
        return torch.cdist(flat, self.codebook).argmin(-1).view(tokens.shape[0], tokens.shape[1])
