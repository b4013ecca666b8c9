"""Plugin discovery through the ``facerep`` entry-point group.

Each entry point is loaded on its own: a plugin that fails to import, declares an incompatible API
version or breaks while registering is reported and skipped, so one broken package never takes
the others down. A plugin name claimed by two distributions (or by an ``extra`` plugin and an
installed one) is a ``collision``: every claimant is skipped, so a run never silently gets
whichever one sorted first. A component name a plugin registers twice keeps its first
registration; the duplicate is skipped and reported on the plugin. Asking for a component of a
skipped plugin says which plugin was skipped and why. Plugin authors set
``FACEREP_STRICT_PLUGINS=1`` to turn those reports into errors.

Environment switches (as pytest and tox have them):

- ``FACEREP_DISABLE_PLUGINS=a,b``: do not load these plugins (entry-point names).
- ``FACEREP_PLUGINS=a,b``: load only these plugins (an allow-list; ``core`` is always loaded).
- ``FACEREP_STRICT_PLUGINS=1``: raise on the first broken plugin or collision instead of skipping it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import attrs
import pluggy

from facerep import hookspecs
from facerep.errors import PluginError, RegistrationCollisionError
from facerep.registry import Registrar, Registry

__all__ = ["PluginRecord", "PluginSet", "get_plugins", "load_plugins", "reset_plugins"]

CORE = "core"


DUPLICATE = "duplicate registration skipped, the first is kept"

#: Statuses of a plugin that is not loaded because something is wrong with it ("disabled" is a choice).
PROBLEM_STATUSES = ("failed", "incompatible", "collision")


@attrs.frozen
class PluginRecord:
    """What is known about one plugin, loaded or not (the manifest written into every work dir).

    ``error`` says why a plugin was skipped; on a ``loaded`` plugin it lists the registrations that
    were skipped (a component name registered twice), so the plugin still counts as a problem.
    """

    name: str
    dist: str
    version: str
    module: str
    status: str  # "loaded" | "failed" | "disabled" | "incompatible" | "collision"
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
        """Skipped plugins (failed, incompatible, colliding) and loaded ones with skipped registrations."""
        return [r for r in self.records if r.status in PROBLEM_STATUSES or (r.status == "loaded" and r.error)]

    def manifest(self) -> list[dict[str, str]]:
        return [attrs.asdict(r) for r in self.records]

    def skipped(self) -> dict[str, str]:
        """``{plugin name: why it was skipped}`` for every name no loaded plugin answers to."""
        loaded = {r.name for r in self.loaded}
        by_name: dict[str, list[PluginRecord]] = {}
        for record in self.records:
            if record.name not in loaded:
                by_name.setdefault(record.name, []).append(record)
        reasons = {}
        for name, records in by_name.items():
            dists = ", ".join(dict.fromkeys(f"{r.dist} {r.version}" for r in records))
            why = "; ".join(dict.fromkeys(_why(r) for r in records))
            reasons[name] = f"plugin {name!r} ({dists}) was skipped: {why}"
        return reasons

    def get(self, kind: str, name: str):
        return self.registry.get(
            kind, name, installed_plugins=[f"{r.name} ({r.dist} {r.version})" for r in self.loaded], skipped_plugins=self.skipped()
        )


def _why(record: PluginRecord) -> str:
    if record.status == "disabled":
        return "disabled (FACEREP_DISABLE_PLUGINS / FACEREP_PLUGINS)"
    return f"{record.status}: {record.error}" if record.error else record.status


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _strict_default() -> bool:
    return os.environ.get("FACEREP_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _report(record: PluginRecord, strict: bool, exc: BaseException | None = None, error: type[PluginError] = PluginError) -> None:
    message = f"facerep plugin {record.name!r} from {record.dist} {record.version} ({record.status}): {record.error}"
    if strict:
        raise error(message + " [FACEREP_STRICT_PLUGINS is set]") from exc
    message = message.replace(f" ({record.status}):", f" was skipped ({record.status}):")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _check_api(info: dict[str, Any] | None) -> str:
    if not info or "api_version" not in info:
        return "facerep_plugin_info() must return a dict with 'api_version'"
    theirs = str(info["api_version"]).split(".")
    ours = hookspecs.API_VERSION.split(".")
    if theirs[0] != ours[0]:
        return f"written for facerep API {info['api_version']}, this core provides {hookspecs.API_VERSION}"
    # same major: additions only, so a plugin written for an older minor works; one written for a
    # newer minor may use what this core lacks
    try:
        newer = int(theirs[1] if len(theirs) > 1 else 0) > int(ours[1])
    except ValueError:
        return f"api_version {info['api_version']!r} is not of the form MAJOR.MINOR"
    if newer:
        return f"written for facerep API {info['api_version']}, newer than this core's {hookspecs.API_VERSION}; upgrade facerep-core"
    return ""


def _providers(bases: list[dict[str, str]]) -> str:
    names = [f"{b['dist']} {b['version']}" for b in bases]
    return f"both {names[0]} and {names[1]}" if len(names) == 2 else ", ".join(names[:-1]) + f" and {names[-1]}"


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
        strict: raise on a broken plugin or a collision (default: ``FACEREP_STRICT_PLUGINS``).
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
    from facerep import __version__, _builtin

    pm.register(_builtin, name=CORE)
    core = PluginRecord(CORE, "facerep-core", __version__, _builtin.__name__, "loaded", summary="core built-ins")

    # Pass 1: every claimant of each plugin name. A disabled entry point is set aside first: it is
    # never imported and takes part in no collision (disabling a name is how a user silences one).
    entries: list[PluginRecord | tuple[dict[str, str], Callable[[], object]]] = []
    claims: dict[str, list[dict[str, str]]] = {CORE: [dict(name=CORE, dist=core.dist, version=core.version, module=core.module)]}
    seen: set[tuple[str, ...]] = set()
    eps = md.entry_points(group=hookspecs.PROJECT) if entry_points is None else entry_points
    for ep in sorted(eps, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name, version = (dist.name, dist.version) if dist is not None else ("<unknown>", "?")
        base = dict(name=ep.name, dist=dist_name, version=version, module=ep.value)
        if tuple(base.values()) in seen:  # the very same entry point listed twice (one distribution on the path twice)
            continue
        seen.add(tuple(base.values()))
        if ep.name in disabled or (allow is not None and ep.name not in allow):
            entries.append(PluginRecord(**base, status="disabled"))
            continue
        entries.append((base, ep.load))
        claims.setdefault(ep.name, []).append(base)
    for name, obj in extra:
        base = dict(name=name, dist="<local>", version="0", module=getattr(obj, "__name__", repr(obj)))
        entries.append((base, lambda obj=obj: obj))
        claims.setdefault(name, []).append(base)

    # Pass 2: load each plugin whose name has exactly one claimant, in name order (extras last).
    records: list[PluginRecord] = [core]
    for entry in entries:
        if isinstance(entry, PluginRecord):
            records.append(entry)
            continue
        base, load = entry
        rivals = claims[base["name"]]
        if len(rivals) > 1:
            # A name claimed twice: none of the claimants is trusted. Keeping the first (in sort
            # order) would let a run naming `<name>.x` silently get whichever package happened to
            # win, so every claimant is skipped, unimported, and a run needing one of their
            # components says why (core, built in, keeps its own name). Strict mode raises.
            fix = ("'core' is reserved for facerep-core; uninstall the other distribution" if base["name"] == CORE
                   else "none of them is loaded; uninstall all but one")
            error = f"plugin name {base['name']!r} is provided by {_providers(rivals)}; {fix}"
            records.append(PluginRecord(**base, status="collision", error=error))
            _report(records[-1], strict, error=RegistrationCollisionError)
            continue
        try:
            obj = load()
        except Exception as exc:  # any import-time failure of third-party code
            records.append(PluginRecord(**base, status="failed", error=f"import failed: {type(exc).__name__}: {exc}"))
            _report(records[-1], strict, exc)
            continue
        records.append(_register(pm, obj, base, strict))

    registry = Registry()
    for i, record in enumerate(records):
        if record.status != "loaded":
            continue
        plugin = pm.get_plugin(record.name)
        impl = getattr(plugin, "facerep_register", None)
        if impl is None:
            continue
        duplicates: list[str] | None = None if strict else []
        try:
            impl(registrar=Registrar(registry, record.name, record.dist, record.version, duplicates=duplicates))
        except Exception as exc:
            if strict and isinstance(exc, RegistrationCollisionError):  # a name registered twice
                raise RegistrationCollisionError(f"{exc} [FACEREP_STRICT_PLUGINS is set]") from exc
            pm.unregister(name=record.name)
            registry.discard_plugin(record.name)  # nothing it registered before failing stays visible
            records[i] = attrs.evolve(record, status="failed", error=f"facerep_register failed: {type(exc).__name__}: {exc}")
            _report(records[i], strict, exc)
            continue
        if duplicates:
            # The plugin stays loaded with the first registration of each name; the duplicates are
            # skipped and recorded, so `facerep list` shows them and `facerep plugins check` fails.
            records[i] = attrs.evolve(record, error="; ".join(f"{DUPLICATE}: {d}" for d in duplicates))
            for d in duplicates:
                warnings.warn(
                    f"facerep plugin {record.name!r} from {record.dist} {record.version} is loaded, but a registration "
                    f"was skipped ({DUPLICATE}): {d}",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return PluginSet(pm, records, registry)


def _register(pm: pluggy.PluginManager, obj: object, base: dict[str, str], strict: bool) -> PluginRecord:
    try:
        pm.register(obj, name=base["name"])
        info_impl = getattr(obj, "facerep_plugin_info", None)
        info = info_impl() if info_impl is not None else None
    except Exception as exc:  # invalid hookimpls, duplicate registration, info hook raising
        record = PluginRecord(**base, status="failed", error=f"{type(exc).__name__}: {exc}")
        if pm.is_registered(obj):
            pm.unregister(obj)
        _report(record, strict, exc)
        return record
    problem = _check_api(info)
    if problem:
        pm.unregister(obj)
        record = PluginRecord(**base, status="incompatible", error=problem)
        _report(record, strict)
        return record
    return PluginRecord(**base, status="loaded", summary=str((info or {}).get("summary", "")))


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
