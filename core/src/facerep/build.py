"""Resolve and build components named in a config through the plugin registry."""

from __future__ import annotations

from typing import Any

import attrs

from facerep.config import ComponentConfig, RunConfig, structure
from facerep.errors import ConfigError
from facerep.plugins import PluginSet, get_plugins
from facerep.registry import ComponentSpec

__all__ = ["Resolved", "build", "resolve", "resolve_eval", "resolve_run"]


@attrs.frozen
class Resolved:
    """A component found in the registry with its params structured (nothing built yet)."""

    path: str  # config path, e.g. "objective"
    kind: str
    spec: ComponentSpec
    params: Any


def resolve(kind: str, component: ComponentConfig, path: str, plugins: PluginSet | None = None) -> Resolved:
    """Find the component and structure its params; errors name ``path``."""
    plugins = plugins or get_plugins()
    try:
        spec = plugins.get(kind, component.name)
    except KeyError as exc:
        raise type(exc)(f"{path}.name: {exc}") from None
    params_cls = spec.load_params()
    if params_cls is None:
        if component.params:
            raise ConfigError(f"{path}.params: {spec.name} takes no parameters, got {sorted(component.params)}")
        return Resolved(path, kind, spec, None)
    return Resolved(path, kind, spec, structure(component.params, params_cls, path=f"{path}.params"))


def build(resolved: Resolved, **deps: Any) -> Any:
    """Import the target and call it with the params (and the kind's dependencies)."""
    target = resolved.spec.load()
    return target(**deps) if resolved.params is None else target(resolved.params, **deps)


def resolve_run(cfg: RunConfig, plugins: PluginSet | None = None) -> list[Resolved]:
    """Resolve every component a run config names, in build order (for ``--dry-run``)."""
    plugins = plugins or get_plugins()
    out: list[Resolved] = []
    if cfg.objective is not None:
        for kind, comp, path in (("dataset", cfg.data, "data"), ("backbone", cfg.backbone, "backbone")):
            if comp is None:
                raise ConfigError(f"{path}: required when 'objective' is set")
            out.append(resolve(kind, comp, path, plugins))
        out.append(resolve("objective", cfg.objective, "objective", plugins))
    elif cfg.backbone is not None and cfg.backbone_weights is None:
        out.append(resolve("backbone", cfg.backbone, "backbone", plugins))
    for i, ev in enumerate(cfg.evaluate):
        out.extend(resolve_eval(ev, f"evaluate.{i}", plugins).values())
    return out


def resolve_eval(ev: Any, path: str, plugins: PluginSet | None = None) -> dict[str, Any]:
    """The components of one ``evaluate`` entry: ``task`` (when given), ``train``, ``test``, ``val``
    (when given) and ``protocol.<j>`` for each protocol."""
    if ev.task is None and not ev.label:
        raise ConfigError(f"{path}: give a 'task' or a 'label' to classify")
    if ev.task is not None and ev.label:
        raise ConfigError(f"{path}: give a 'task' or a 'label', not both (the task decides its label)")
    protocols = ev.all_protocols()
    if not protocols:
        raise ConfigError(f"{path}: no 'protocol' or 'protocols' given")
    for f in ev.fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"{path}.fractions: {f} is not in (0, 1]")
    out: dict[str, Any] = {}
    for j, proto in enumerate(protocols):
        where = f"{path}.protocol" if ev.protocol is not None and j == 0 else f"{path}.protocols.{j - (ev.protocol is not None)}"
        out[f"protocol.{j}"] = resolve("protocol", proto, where, plugins)
    if ev.task is not None:
        out["task"] = resolve("task", ev.task, f"{path}.task", plugins)
    for key in ("train", "test", "val"):
        if getattr(ev, key) is not None:
            out[key] = resolve("dataset", getattr(ev, key), f"{path}.{key}", plugins)
    return out
