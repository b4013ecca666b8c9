"""Checkpoints that load without executing pickled code.

- Training checkpoints (mmengine's layout, for resume) hold tensors and plain data only: the
  message hub's objects are converted to lists and dicts when saving (:func:`to_plain`) and back
  when loading, so they are read with ``torch.load(weights_only=True)`` and no allow-list.
- The exported backbone is a safetensors state dict plus a JSON sidecar describing how to build it
  (component name and params, method, run info): no pickle at all. Other modules an objective
  exports (``Objective.exports()``, e.g. FaRL's text tower) are written the same way, their sidecar
  carrying the objective's config (:func:`export_module`, :func:`read_module`).
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

__all__ = ["IMPORT_PREFIXES", "check_fits", "export_backbone", "export_module", "import_state_dict", "json_sidecar", "load_backbone",
           "read_checkpoint", "read_module", "read_sidecar", "read_state_dict", "safe_checkpoint_loading"]

FORMAT = "facerep.backbone/1"
MODULE_FORMAT = "facerep.module/1"


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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint safely (tensors and plain data only), or raise a DataError that
    says what is wrong with the file: missing, truncated, pickled code, not a facerep checkpoint."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line.strip() for line in reason if "Unsupported global" in line or "GLOBAL" in line), reason[0] if reason else "")
        raise DataError(f"{path}: not a facerep checkpoint: contains pickled code, refused without running it ({detail})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(f"{path}: truncated or not a torch checkpoint ({type(exc).__name__}: {first}); "
                        f"resume from an earlier checkpoint with --resume PATH") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) or not isinstance(ckpt.get("meta"), dict):
        raise DataError(f"{path}: not a facerep training checkpoint (expected 'meta' and 'state_dict' entries)")
    if not isinstance(ckpt["meta"].get("iter"), int):
        raise DataError(f"{path}: checkpoint meta has no step ('iter')")
    return ckpt


def _mismatches(have: dict[str, Any], want: dict[str, torch.Tensor]) -> list[str]:
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = [f"{k}: {tuple(have[k].shape)} in the file, {tuple(want[k].shape)} in the model"
              for k in sorted(set(want) & set(have)) if not isinstance(have[k], torch.Tensor) or have[k].shape != want[k].shape]
    short = lambda keys: ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
    return ([f"missing {short(missing)}"] if missing else []) + ([f"unexpected {short(extra)}"] if extra else []) + shapes[:4]


def check_fits(ckpt: dict[str, Any], model: nn.Module, path: str | Path) -> None:
    """Refuse a checkpoint whose tensors do not match ``model`` key for key and shape for shape
    (mmengine's resume would load it non-strictly and train a half-initialised model)."""
    problems = _mismatches(ckpt["state_dict"], model.state_dict())
    if problems:
        raise DataError(f"{path}: does not fit this run's model (was the backbone or objective changed?): " + "; ".join(problems))


def export_backbone(module: nn.Module, path: str | Path, *, backbone: ComponentConfig, method: str,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``module``'s state dict to ``path`` (safetensors) and ``path.json`` beside it."""
    from safetensors.torch import save_file

    from facerep.workdir import atomic_write, atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    sidecar = {"format": FORMAT, "backbone": unstructure(backbone), "method": method, **(extra or {})}
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str))
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    return path


def read_state_dict(path: str | Path, *, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a ``.pth``/``.pt`` read with ``weights_only=True``
    (no pickled code runs); ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and DDP's
    ``module.`` prefixes are removed. A missing or unreadable file is a :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc}); only safetensors and plain torch.save "
                        f"state dicts are read (pickled objects and TorchScript files would execute code)") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def export_module(module: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``module``'s state dict to ``path`` (safetensors) and ``meta`` to ``path.json``."""
    from safetensors.torch import save_file

    from facerep.workdir import atomic_write, atomic_write_text

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_text(path.with_suffix(".json"), json.dumps({"format": MODULE_FORMAT, **meta}, indent=2, default=str))
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={"format": MODULE_FORMAT})
    return path


def read_module(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and sidecar of a module written by :func:`export_module`."""
    from safetensors.torch import load_file

    path, side = Path(path), Path(path).with_suffix(".json")
    for f in (path, side):
        if not f.is_file():
            raise DataError(f"exported module file not found: {f}")
    meta = json_sidecar(side, MODULE_FORMAT)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return state, meta


def json_sidecar(side: Path, fmt: str) -> dict[str, Any]:
    """The JSON object in ``side`` whose ``format`` is ``fmt``, or a DataError naming the file."""
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{side}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{side}: unknown format {got!r}, expected {fmt!r}")
    return meta


def read_sidecar(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    side = path.with_suffix(".json")
    if not path.is_file():
        raise DataError(f"backbone weights not found: {path}")
    if not side.is_file():
        raise DataError(f"backbone sidecar not found: {side} (written next to the weights by facerep)")
    return json_sidecar(side, FORMAT)


def load_backbone(path: str | Path, plugins: Any = None, *, params: dict[str, Any] | None = None) -> nn.Module:
    """Build the backbone described by the sidecar and load the safetensors weights (strict).

    ``params``: overrides of the sidecar's backbone params that do not change the weights (e.g.
    ``{"layers": [1, 3]}``: which intermediate layers the backbone returns)."""
    from safetensors.torch import load_file

    from facerep.build import build, resolve
    from facerep.config import structure

    meta = read_sidecar(path)
    side = Path(path).with_suffix(".json")
    if not isinstance(meta.get("backbone"), dict):
        raise DataError(f"{side}: no 'backbone' block naming the component to build")
    raw = dict(meta["backbone"])
    if params:
        raw["params"] = {**(raw.get("params") or {}), **params}
    comp = structure(raw, ComponentConfig, path="backbone", source=side)
    module = build(resolve("backbone", comp, f"{side}: backbone", plugins))
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError) on bad files
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc}); was it truncated?") from None
    problems = _mismatches(state, module.state_dict())
    if problems:
        raise DataError(f"{path}: weights do not fit the backbone its sidecar names ({comp.name} {comp.params}): " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
    return module


#: Wrappers a released checkpoint may put around the backbone's own keys, tried longest first:
#: FRL's SwAV/MoCo ResNet-50 (``module.base_net.``, Bulat et al. ECCV 2022 release), DDP, and the
#: usual names of the encoder inside a self-supervised model.
IMPORT_PREFIXES = ("module.base_net.", "base_net.", "module.encoder_q.", "encoder_q.", "module.backbone.", "backbone.",
                   "module.encoder.", "encoder.", "module.model.", "module.")
#: Source keys that belong to a training head, not to the backbone: reported and left out.
_HEAD_KEYS = ("fc.", "head.", "heads.", "projection_head.", "prototypes.", "projector.", "predictor.", "classifier.")


def _mapped(state: dict[str, torch.Tensor], prefix: str, inner: str) -> dict[str, torch.Tensor]:
    """The source keys under ``prefix`` with it replaced by ``inner`` (the backbone's own wrapper, e.g. ``model.``)."""
    return {inner + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) or not prefix}


def import_state_dict(module: nn.Module, state: dict[str, torch.Tensor], *, source: str | Path,
                      prefix: str | None = None) -> dict[str, Any]:
    """Load a released state dict (torchvision / timm keys, bare or under a known wrapper such as
    FRL's ``module.base_net.``) into ``module`` strictly: every tensor of the module must come from
    the file with its shape; source keys of training heads (``fc.``, ``projection_head.``,
    ``prototypes.``, ...) are left out and reported. ``prefix`` forces the wrapper; by default the
    one that maps the most keys onto the module is chosen. Returns what was done."""
    want = module.state_dict()
    inner = next((p for p in ("model.",) if all(k.startswith(p) for k in want)), "")
    candidates = [prefix] if prefix is not None else ["", *IMPORT_PREFIXES]
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    scored = [(sum(k in want for k in _mapped(state, p, inner)), p) for p in candidates]
    hits, best = max(scored, key=lambda t: (t[0], len(t[1])))
    if hits == 0:
        raise DataError(f"{source}: none of its {len(state)} tensors ({', '.join(list(state)[:3])}, ...) matches the backbone's keys "
                        f"({', '.join(list(want)[:3])}, ...) under any known prefix ({', '.join(repr(p) for p in candidates)}); "
                        f"give --prefix")
    mapped = _mapped(state, best, inner)
    left_out = sorted(k[len(inner):] for k in mapped if k not in want)
    unexpected = [k for k in left_out if not k.startswith(_HEAD_KEYS) and not k.endswith("num_batches_tracked")]
    problems = _mismatches({k: v for k, v in mapped.items() if k in want}, want)
    if problems or unexpected:
        extra = [f"unexpected backbone tensors {', '.join(unexpected[:4])}"] if unexpected else []
        raise DataError(f"{source}: does not fit the backbone (prefix {best!r}): " + "; ".join(problems + extra))
    module.load_state_dict({k: v for k, v in mapped.items() if k in want}, strict=True)
    return {"prefix": best, "loaded": len(want), "left_out": left_out, "ignored_outside_prefix": len(state) - len(_mapped(state, best, ""))}
