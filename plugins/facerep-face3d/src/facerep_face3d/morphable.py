"""The 3DMM option of the 3D alignment task: the head regresses shape, expression and pose
parameters of a morphable model the user supplies, and the 68 landmarks follow from them (3DDFA,
Zhu et al. CVPR 2016 §3: weak-perspective projection ``s R (mean + A_id alpha + A_exp beta) + t``).

No basis ships with facerep: the Basel Face Model (used by 300W-LP and AFLW2000-3D: 199 shape and
29 expression components) has its own licence. ``basis`` is an ``.npz`` with

- ``mean`` ``(N, 3)``: the mean shape's vertices (any units; y up, as in BFM);
- ``shape`` ``(N, 3, K_s)`` and ``expression`` ``(N, 3, K_e)``: the components (scaled by their
  standard deviations, so that parameters are of order 1, or not: the head learns either);
- ``keypoints`` ``(68,)``: the vertex index of each of the 68 landmarks (iBUG order).

Only the 68 keypoint vertices are kept. The mean shape is centred and scaled so that its landmark
box has side 1 (the same factor scales the components), which puts every parameter on a comparable
scale for the head; the pose is (pitch, yaw, roll, log scale, tx, ty) in the crop's normalised frame,
image y pointing down.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facerep.errors import DataError
from facerep.eval.task import HeadBase
from facerep.types import LossOutput

__all__ = ["MorphableBasis", "MorphableHead", "rotation_matrix"]


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` pitch, yaw, roll (radians) -> ``(B, 3, 3)`` = R_x(pitch) R_y(yaw) R_z(roll) (3DDFA's order)."""
    p, y, r = angles.unbind(-1)
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], -1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], -1).view(-1, 3, 3)
    return rx @ ry @ rz


class MorphableBasis(nn.Module):
    """The 68-keypoint part of a morphable model, normalised (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"3DMM basis not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                mean, shape, expr, kpt = (np.asarray(z[k]) for k in ("mean", "shape", "expression", "keypoints"))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path}: not a 3DMM basis .npz with mean (N, 3), shape (N, 3, Ks), expression (N, 3, Ke), "
                            f"keypoints (68,) ({exc})") from None
        n = len(mean)
        if mean.shape != (n, 3) or shape.ndim != 3 or expr.ndim != 3 or shape.shape[:2] != (n, 3) or expr.shape[:2] != (n, 3):
            raise DataError(f"{path}: mean {mean.shape}, shape {shape.shape}, expression {expr.shape}: "
                            f"expected (N, 3), (N, 3, Ks), (N, 3, Ke)")
        if kpt.shape != (68,) or kpt.min() < 0 or kpt.max() >= n:
            raise DataError(f"{path}: keypoints must be 68 vertex indices below {n}, got shape {kpt.shape}")
        mean, shape, expr = mean[kpt].astype(np.float64), shape[kpt].astype(np.float64), expr[kpt].astype(np.float64)
        centre = (mean.min(0) + mean.max(0)) / 2
        side = float((mean.max(0) - mean.min(0))[:2].max())
        if side <= 0:
            raise DataError(f"{path}: the mean shape's 68 keypoints are degenerate")
        self.register_buffer("mean", torch.tensor((mean - centre) / side, dtype=torch.float32))
        self.register_buffer("shape_basis", torch.tensor(shape / side, dtype=torch.float32))
        self.register_buffer("expression_basis", torch.tensor(expr / side, dtype=torch.float32))
        self.n_shape, self.n_expression = shape.shape[2], expr.shape[2]

    def landmarks(self, alpha: torch.Tensor, beta: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """``(B, 68, 3)`` in the crop frame: ``s R (mean + A_s alpha + A_e beta) + t``, y flipped to point down."""
        verts = self.mean + torch.einsum("kcs,bs->bkc", self.shape_basis, alpha) + torch.einsum("kce,be->bkc", self.expression_basis, beta)
        rotated = verts @ rotation_matrix(pose[:, :3]).transpose(1, 2)
        scale = pose[:, 3].exp().view(-1, 1, 1)
        flip = torch.tensor([1.0, -1.0, 1.0], device=pose.device)
        shift = torch.stack([pose[:, 4], pose[:, 5], torch.zeros_like(pose[:, 4])], -1).unsqueeze(1)
        return scale * rotated * flip + shift


class MorphableHead(HeadBase):
    """Pooled vector -> 3DMM parameters -> ``(B, 68, 3)`` landmarks (the task's loss and predictions)."""

    def __init__(self, dim: int, basis: MorphableBasis, *, crop_scale: float, hidden: int | None = None) -> None:
        super().__init__()
        self.basis = basis
        n_out = basis.n_shape + basis.n_expression + 6
        self.fc = nn.Linear(dim, n_out) if not hidden else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, n_out))
        last = self.fc if isinstance(self.fc, nn.Linear) else self.fc[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():  # the mean face, frontal, filling the crop as a landmark box does
            last.bias.zero_()
            last.bias[-3] = float(np.log(1.0 / crop_scale))
            last.bias[-2:] = 0.5

    def parameters_of(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.fc(inputs["pooled"]).float()
        ks, ke = self.basis.n_shape, self.basis.n_expression
        return out[:, :ks], out[:, ks : ks + ke], out[:, ks + ke :]

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        pts = self.basis.landmarks(*self.parameters_of(inputs))
        return torch.cat([pts[..., :2], pts[..., 2:] - pts[..., 2:].mean(1, keepdim=True)], -1)  # relative depth, as the targets

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        from facerep_face3d.task import masked_point_loss

        pl = masked_point_loss(output, targets["points"].float())
        return LossOutput(pl, {"point": float(pl.detach())})
