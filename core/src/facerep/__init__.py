"""facerep: facial representation learning with pluggable methods and tasks.

The public surface is small: the data types, the protocols components implement, the hook
markers for plugins, and a few entry points. Heavy modules (torch, timm, mmengine) are imported
lazily so that ``facerep --help`` and ``facerep list`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Sample": "facerep.types",
    "DatasetInfo": "facerep.types",
    "Features": "facerep.types",
    "LossOutput": "facerep.types",
    "ParamGroup": "facerep.types",
    "Views": "facerep.types",
    "FaceDataset": "facerep.protocols",
    "Backbone": "facerep.protocols",
    "Objective": "facerep.protocols",
    "ViewTransform": "facerep.protocols",
    "Head": "facerep.protocols",
    "Task": "facerep.protocols",
    "Protocol": "facerep.protocols",
    "hookimpl": "facerep.hookspecs",
    "API_VERSION": "facerep.hookspecs",
    "get_plugins": "facerep.plugins",
    "load_plugins": "facerep.plugins",
    "build": "facerep.build",
    "load_backbone": "facerep.checkpoint",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facerep' has no attribute {name!r}")
