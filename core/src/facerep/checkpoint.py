"""Checkpoints that load without executing pickled code.

- Training checkpoints (mmengine's layout, for resume) hold tensors and plain data only: the
  message hub's objects are converted to lists and dicts when saving (:func:`to_plain`) and back
  when loading, so they are read with ``torch.load(weights_only=True)`` and no allow-list.
- The exported backbone is a safetensors state dict plus a JSON sidecar describing how to build it
  (component name and params, method, run info): no pickle at all.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facerep.config import ComponentConfig, unstructure
from facerep.errors import DataError

__all__ = ["export_backbone", "load_backbone", "read_sidecar", "safe_checkpoint_loading"]

FORMAT = "facerep.backbone/1"


_BUFFER_TAG = "__history_buffer__"


def to_plain(obj: Any) -> Any:
    """Replace mmengine ``HistoryBuffer``s and numpy values with plain lists, numbers and dicts.

    mmengine pickles its message hub as objects (a HistoryBuffer even pickles bound methods via
    ``getattr``), which a ``weights_only`` load rightly refuses; plain data loads safely."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_BUFFER_TAG: True, "log": log.tolist(), "count": count.tolist(), "max_length": obj.max_length}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain` for the message hub's history buffers."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if isinstance(obj, dict):
        if obj.get(_BUFFER_TAG):
            return HistoryBuffer(obj["log"], obj["count"], obj["max_length"])
        return {k: from_plain(v) for k, v in obj.items()}
    return obj


@contextlib.contextmanager
def safe_checkpoint_loading() -> Iterator[None]:
    """Inside this context every ``torch.load`` (mmengine's resume included) is ``weights_only``:
    tensors and plain data only; any other object in the file is refused."""
    original = torch.load

    def _load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = _load  # mmengine calls torch.load without weights_only
    try:
        yield
    finally:
        torch.load = original


def export_backbone(module: nn.Module, path: str | Path, *, backbone: ComponentConfig, method: str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``module``'s state dict to ``path`` (safetensors) and ``path.json`` beside it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": FORMAT})
    sidecar = {"format": FORMAT, "backbone": unstructure(backbone), "method": method, **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str))
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    side = path.with_suffix(".json")
    if not path.is_file():
        raise DataError(f"backbone weights not found: {path}")
    if not side.is_file():
        raise DataError(f"backbone sidecar not found: {side} (written next to the weights by facerep)")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{side}: not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{side}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_backbone(path: str | Path, plugins: Any = None) -> nn.Module:
    """Build the backbone described by the sidecar and load the safetensors weights (strict)."""
    from safetensors.torch import load_file

    from facerep.build import build, resolve
    from facerep.config import structure

    meta = read_sidecar(path)
    comp = structure(meta["backbone"], ComponentConfig, path="backbone", source=Path(path).with_suffix(".json"))
    module = build(resolve("backbone", comp, "backbone", plugins))
    module.load_state_dict(load_file(str(path)), strict=True)
    return module
