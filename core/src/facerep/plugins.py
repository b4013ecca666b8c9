"""Plugin discovery through the ``facerep`` entry-point group.

Each entry point is loaded on its own: a plugin that fails to import, declares an incompatible API
version or breaks while registering is reported and skipped, so one broken package never takes
the others down. Plugin authors set ``FACEREP_STRICT_PLUGINS=1`` to turn those reports into errors.

Environment switches (as pytest and tox have them):

- ``FACEREP_DISABLE_PLUGINS=a,b``: do not load these plugins (entry-point names).
- ``FACEREP_PLUGINS=a,b``: load only these plugins (an allow-list; ``core`` is always loaded).
- ``FACEREP_STRICT_PLUGINS=1``: raise on the first broken plugin instead of skipping it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import attrs
import pluggy

from facerep import hookspecs
from facerep.errors import PluginError, RegistrationCollisionError
from facerep.registry import Registrar, Registry

__all__ = ["PluginRecord", "PluginSet", "get_plugins", "load_plugins", "reset_plugins"]

CORE = "core"


@attrs.frozen
class PluginRecord:
    """What is known about one plugin, loaded or not (the manifest written into every work dir)."""

    name: str
    dist: str
    version: str
    module: str
    status: str  # "loaded" | "failed" | "disabled" | "incompatible"
    error: str = ""
    summary: str = ""


@attrs.define
class PluginSet:
    """The plugin manager, its records and the component registry built from it."""

    manager: pluggy.PluginManager
    records: list[PluginRecord]
    registry: Registry

    @property
    def loaded(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status == "loaded"]

    @property
    def problems(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status in ("failed", "incompatible")]

    def manifest(self) -> list[dict[str, str]]:
        return [attrs.asdict(r) for r in self.records]

    def get(self, kind: str, name: str):
        return self.registry.get(kind, name, installed_plugins=[f"{r.name} ({r.dist} {r.version})" for r in self.loaded])


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _strict_default() -> bool:
    return os.environ.get("FACEREP_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _report(record: PluginRecord, strict: bool, exc: BaseException | None = None) -> None:
    message = f"facerep plugin {record.name!r} from {record.dist} {record.version} ({record.status}): {record.error}"
    if strict:
        raise PluginError(message + " [FACEREP_STRICT_PLUGINS is set]") from exc
    message = message.replace(f" ({record.status}):", f" was skipped ({record.status}):")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _check_api(info: dict[str, Any] | None) -> str:
    if not info or "api_version" not in info:
        return "facerep_plugin_info() must return a dict with 'api_version'"
    theirs = str(info["api_version"]).split(".")[0]
    ours = hookspecs.API_VERSION.split(".")[0]
    if theirs != ours:
        return f"written for facerep API {info['api_version']}, this core provides {hookspecs.API_VERSION}"
    return ""


def load_plugins(
    *,
    strict: bool | None = None,
    disable: Iterable[str] | None = None,
    only: Iterable[str] | None = None,
    entry_points: Iterable[md.EntryPoint] | None = None,
    extra: Iterable[tuple[str, ModuleType | object]] = (),
) -> PluginSet:
    """Discover plugins and build the component registry.

    Args:
        strict: raise on a broken plugin (default: ``FACEREP_STRICT_PLUGINS``).
        disable: plugin names not to load (default: ``FACEREP_DISABLE_PLUGINS``).
        only: if given, load only these plugins (default: ``FACEREP_PLUGINS``).
        entry_points: the entry points to consider (default: the installed ``facerep`` group).
        extra: ``(name, plugin_object)`` pairs registered as plugins too (tests, notebooks).
    """
    strict = _strict_default() if strict is None else strict
    disabled = set(_env_list("FACEREP_DISABLE_PLUGINS") or [] if disable is None else disable)
    allow = _env_list("FACEREP_PLUGINS") if only is None else list(only)

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    records: dict[str, PluginRecord] = {}
    from facerep import __version__, _builtin

    pm.register(_builtin, name=CORE)
    records[CORE] = PluginRecord(CORE, "facerep-core", __version__, _builtin.__name__, "loaded", summary="core built-ins")

    eps = md.entry_points(group=hookspecs.PROJECT) if entry_points is None else entry_points
    for ep in sorted(eps, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name, version = (dist.name, dist.version) if dist is not None else ("<unknown>", "?")
        base = dict(name=ep.name, dist=dist_name, version=version, module=ep.value)
        if ep.name in records:
            other = records[ep.name]
            raise RegistrationCollisionError(f"plugin name {ep.name!r} is provided by both {other.dist} {other.version} and {dist_name} {version}")
        if ep.name in disabled or (allow is not None and ep.name not in allow):
            records[ep.name] = PluginRecord(**base, status="disabled")
            continue
        try:
            module = ep.load()
        except Exception as exc:  # any import-time failure of third-party code
            records[ep.name] = PluginRecord(**base, status="failed", error=f"import failed: {type(exc).__name__}: {exc}")
            _report(records[ep.name], strict, exc)
            continue
        _register(pm, records, module, base, strict)
    for name, obj in extra:
        if name in records:  # as for two entry points: never replace (or drop) an installed plugin
            other = records[name]
            raise RegistrationCollisionError(f"plugin name {name!r} is provided by both {other.dist} {other.version} and <local> 0")
        _register(pm, records, obj, dict(name=name, dist="<local>", version="0", module=getattr(obj, "__name__", repr(obj))), strict)

    registry = Registry()
    for name, record in list(records.items()):
        if record.status != "loaded":
            continue
        plugin = pm.get_plugin(name)
        impl = getattr(plugin, "facerep_register", None)
        if impl is None:
            continue
        try:
            impl(registrar=Registrar(registry, name, record.dist, record.version))
        except RegistrationCollisionError:
            raise
        except Exception as exc:
            pm.unregister(name=name)
            registry.discard_plugin(name)  # nothing it registered before failing stays visible
            records[name] = attrs.evolve(record, status="failed", error=f"facerep_register failed: {type(exc).__name__}: {exc}")
            _report(records[name], strict, exc)
    return PluginSet(pm, list(records.values()), registry)


def _register(pm: pluggy.PluginManager, records: dict[str, PluginRecord], obj: object, base: dict[str, str], strict: bool) -> None:
    try:
        pm.register(obj, name=base["name"])
        info_impl = getattr(obj, "facerep_plugin_info", None)
        info = info_impl() if info_impl is not None else None
    except Exception as exc:  # invalid hookimpls, duplicate registration, info hook raising
        records[base["name"]] = PluginRecord(**base, status="failed", error=f"{type(exc).__name__}: {exc}")
        if pm.is_registered(obj):
            pm.unregister(obj)
        _report(records[base["name"]], strict, exc)
        return
    problem = _check_api(info)
    if problem:
        pm.unregister(obj)
        records[base["name"]] = PluginRecord(**base, status="incompatible", error=problem)
        _report(records[base["name"]], strict)
        return
    records[base["name"]] = PluginRecord(**base, status="loaded", summary=str((info or {}).get("summary", "")))


_CACHE: PluginSet | None = None


def get_plugins() -> PluginSet:
    """The process-wide plugin set, discovered on first use."""
    global _CACHE
    if _CACHE is None:
        _CACHE = load_plugins()
    return _CACHE


def reset_plugins(plugins: PluginSet | None = None) -> None:
    """Forget (or replace) the process-wide plugin set; used by tests and ``facerep.testing``."""
    global _CACHE
    _CACHE = plugins
