"""The landmark patch sampler returns the expected pixels for known coordinates."""

from __future__ import annotations

import torch

from facerep_lafs.patches import landmark_patches


def _linear_image(h: int = 20, w: int = 30) -> torch.Tensor:
    """Channel 0: x, channel 1: 100 y, channel 2: x + y. Bilinear sampling of a linear function is
    exact, so any sample point's value is known in closed form."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([x, 100 * y, x + y])[None]


def test_patch_samples_the_landmark_neighbourhood_bilinearly():
    img = _linear_image()
    pts = torch.tensor([[[10.0, 5.0], [12.25, 7.5]]])
    tok = landmark_patches(img, pts, patch=4).view(1, 2, 3, 4, 4)  # (B, L, C, row, col)
    offsets = torch.tensor([-1.5, -0.5, 0.5, 1.5])
    for i, (x0, y0) in enumerate(pts[0].tolist()):
        xs, ys = x0 + offsets, y0 + offsets
        torch.testing.assert_close(tok[0, i, 0], xs[None, :].expand(4, 4))  # x varies along columns
        torch.testing.assert_close(tok[0, i, 1], 100 * ys[:, None].expand(4, 4))  # y along rows
        torch.testing.assert_close(tok[0, i, 2], xs[None, :] + ys[:, None])


def test_integer_pixel_with_an_odd_patch_reads_the_pixels_themselves():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 16, 16, generator=g)
    pts = torch.tensor([[[5.0, 6.0]], [[0.0, 15.0]]])
    tok = landmark_patches(img, pts, patch=3).view(2, 3, 3, 3)
    torch.testing.assert_close(tok[0], img[0, :, 5:8, 4:7])  # rows y-1..y+1, columns x-1..x+1
    # at the border the missing pixels read zero
    assert torch.equal(tok[1][:, :, 0], torch.zeros(3, 3)) and torch.equal(tok[1][:, 2, :], torch.zeros(3, 3))
    torch.testing.assert_close(tok[1][:, :2, 1:], img[1, :, 14:16, 0:2])


def test_tokens_are_channel_major_like_a_patch_embedding():
    img = _linear_image(16, 16)
    tok = landmark_patches(img, torch.tensor([[[7.5, 7.5]]]), patch=8)
    assert tok.shape == (1, 1, 3 * 64)
    # 8 x 8 patch centred at 7.5 with offsets -3.5 .. 3.5: exactly pixels 4..11
    torch.testing.assert_close(tok.view(3, 8, 8), img[0, :, 4:12, 4:12])
