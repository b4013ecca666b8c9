"""Make ``import mmseg.models`` work with ``mmcv-lite`` (pure Python, no compiled ``mmcv._ext``).

mmsegmentation 1.2.2 imports ``mmcv.ops`` at ``import mmseg.models``; full mmcv does not build
against torch 2.14 (see ../shared/notes/dependencies.md). When the compiled ops are missing, this
installs a small ``mmcv.ops`` providing ``point_sample`` (the one op the heads used here may
touch: a ``grid_sample`` with [0, 1] points mapped to [-1, 1]) and, for the CUDA-only ops some
other mmseg heads import, placeholders that raise a clear error when used. With real compiled
mmcv present it does nothing.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["install", "point_sample"]

_UNAVAILABLE = ("CrissCrossAttention", "PSAMask", "DeformConv2d", "ModulatedDeformConv2d", "sigmoid_focal_loss")


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs: Any) -> torch.Tensor:
    """Sample ``input (N, C, H, W)`` at ``points (N, P, 2)`` (or (N, Hp, Wp, 2)) given as (x, y) in [0, 1]."""
    add_dim = points.dim() == 3
    grid = 2.0 * points - 1.0
    if add_dim:
        grid = grid.unsqueeze(2)
    out = F.grid_sample(input, grid.to(input.dtype), align_corners=align_corners, **kwargs)
    return out.squeeze(3) if add_dim else out


def _unavailable(name: str) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"mmcv.ops.{name} needs compiled mmcv ops, which are not installed (facerep uses mmcv-lite); "
                           "choose a head that does not use it")

    return type(name, (), {"__init__": fail}) if name[0].isupper() else fail


def install() -> bool:
    """Provide ``mmcv.ops`` when the compiled ops are absent. Returns True when the shim is active."""
    if "mmcv.ops" in sys.modules:
        return getattr(sys.modules["mmcv.ops"], "__facerep_shim__", False)
    try:
        import mmcv.ops
        return False
    except ImportError:
        pass
    import mmcv

    ops = types.ModuleType("mmcv.ops")
    ops.__facerep_shim__ = True  # type: ignore[attr-defined]
    ops.point_sample = point_sample  # type: ignore[attr-defined]
    for name in _UNAVAILABLE:
        setattr(ops, name, _unavailable(name))
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops  # type: ignore[attr-defined]
    return True
