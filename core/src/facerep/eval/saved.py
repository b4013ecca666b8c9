"""Trained task models (backbone + head) written by an evaluation and built again without its data.

An ``evaluate`` entry with ``save_models: true`` writes, for every run of a protocol that trains a
head (``core.frozen_head``, ``core.finetune``), ``models/<entry>_<protocol>_f<fraction>_s<seed>/``:

- ``model.safetensors``: the backbone's tensors under ``backbone.`` and the head's under ``head.``
  (no pickle);
- ``model.json``: the backbone and task components (name + params, as a config would give them),
  the head's ``spec`` (what the task needs besides its params to build the head without training
  data, e.g. the number of landmarks), whether it is the linear head, and the run's metrics.

:func:`load_trained` builds the three again (strict load) and returns them ready for
``task.prepare`` -> ``head(head.select(backbone(...)))`` -> ``task.predict``; the landmarks plugin's
``TrainedLandmarker`` uses it to run a landmarks model on new faces. Only a task that implements
``head_spec`` (see :class:`~facerep.protocols.Task`) can be saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from facerep.config import ComponentConfig, structure, unstructure
from facerep.errors import ConfigError, DataError

__all__ = ["FORMAT", "Trained", "load_trained", "predict_samples", "save_trained"]

FORMAT = "facerep.trained/1"


@attrs.define
class Trained:
    """A saved task model built again; ``meta`` is the sidecar."""

    backbone: nn.Module
    head: nn.Module
    task: Any
    meta: dict[str, Any]


def save_trained(directory: str | Path, backbone: nn.Module, head: nn.Module, *, backbone_cfg: ComponentConfig, task_cfg: ComponentConfig,
                 spec: dict[str, Any], linear: bool, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``directory``; returns the weights' path."""
    from safetensors.torch import save_file

    from facerep.workdir import atomic_write, atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {f"{prefix}.{k}": v.detach().cpu().contiguous()
             for prefix, module in (("backbone", backbone), ("head", head)) for k, v in module.state_dict().items()}
    sidecar = {"format": FORMAT, "backbone": unstructure(backbone_cfg), "task": unstructure(task_cfg), "head_spec": spec,
               "linear": linear, **(meta or {})}
    path = directory / "model.safetensors"
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str))
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    return path


def _read_meta(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    for f in (path, side):
        if not f.is_file():
            raise DataError(f"trained model file not found: {f} (written by an evaluate entry with save_models: true)")
    from facerep.checkpoint import json_sidecar

    meta = json_sidecar(side, FORMAT)
    for key in ("backbone", "task", "head_spec"):
        if not isinstance(meta.get(key), dict):
            raise DataError(f"{side}: no {key!r} block")
    return meta


def load_trained(path: str | Path, plugins: Any = None) -> Trained:
    """Build the backbone, task and head a ``model.json`` names and load ``model.safetensors``
    (strictly: a tensor missing, extra or of another shape is a :class:`DataError` naming it).
    ``path``: the ``model.safetensors`` or the folder holding it. Both modules are in eval mode."""
    from safetensors.torch import load_file

    from facerep.build import build, resolve
    from facerep.checkpoint import _mismatches
    from facerep.data.folder import expand_path

    path = expand_path(str(path))
    if path.is_dir():
        path = path / "model.safetensors"
    meta = _read_meta(path)
    side = path.with_suffix(".json")
    backbone = build(resolve("backbone", structure(meta["backbone"], ComponentConfig, path="backbone", source=side),
                             f"{side}: backbone", plugins))
    task = build(resolve("task", structure(meta["task"], ComponentConfig, path="task", source=side), f"{side}: task", plugins))
    if not hasattr(task, "head_spec"):
        raise ConfigError(f"{side}: task {meta['task'].get('name')} cannot build its head without training data (no head_spec)")
    head = task.build_head(backbone, None, linear=bool(meta.get("linear")), spec=meta["head_spec"])
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError on bad files
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    for prefix, module in (("backbone", backbone), ("head", head)):
        part = {k.removeprefix(f"{prefix}."): v for k, v in state.items() if k.startswith(f"{prefix}.")}
        problems = _mismatches(part, module.state_dict())
        if problems:
            raise DataError(f"{path}: the {prefix} tensors do not fit the model its sidecar names: " + "; ".join(problems))
        module.load_state_dict(part, strict=True)
        module.eval()
    return Trained(backbone, head, task, meta)


@torch.no_grad()
def predict_samples(trained: Trained, samples: list[Any], *, batch_size: int = 64, device: str = "cpu") -> list[Any]:
    """``task.predict`` of the model over ``samples`` (a list of :class:`~facerep.types.Sample`),
    in the original image coordinates, with the task's test views."""
    from facerep.eval.protocols import predict_dataset

    class _List:
        def __init__(self, items: list[Any]) -> None:
            self.items = items

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> Any:
            return self.items[i]

    trained.backbone.to(device)
    trained.head.to(device)
    return predict_dataset(trained.backbone, trained.head, trained.task, _List(samples), batch_size=batch_size)
