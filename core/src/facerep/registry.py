"""The component registry: kind -> qualified name -> lazily imported target.

Plugins fill it through the :class:`Registrar` handed to ``facerep_register``. Nothing is imported
until a component is built, and names are namespaced by plugin (``frl.swav``), so two plugins
can never silently replace each other's components.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from facerep.errors import ComponentNotFoundError, PluginError, RegistrationCollisionError

__all__ = ["KINDS", "ComponentSpec", "Registrar", "Registry", "import_string"]

KINDS = ("dataset", "backbone", "objective", "head", "task", "protocol")


def import_string(target: str) -> Any:
    """Import ``"package.module:Attribute"`` (or ``"package.module.Attribute"``)."""
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise PluginError(f"invalid import string {target!r}; expected 'package.module:Attribute'")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"import string {target!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


@attrs.frozen
class ComponentSpec:
    """One registered component. ``target`` and ``params`` are import strings."""

    kind: str
    name: str  # qualified: "<plugin>.<short>"
    target: str
    params: str | None
    plugin: str
    dist: str
    version: str
    summary: str = ""

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    def load(self) -> Callable[..., Any]:
        return self._import(self.target)

    def load_params(self) -> type | None:
        return None if self.params is None else self._import(self.params)

    def _import(self, target: str) -> Any:
        try:
            return import_string(target)
        except (ImportError, PluginError) as exc:  # a missing dependency or a wrong import string: name who is at fault
            detail = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
            raise PluginError(f"{self.kind} {self.name} ({self.dist} {self.version}): cannot import {target!r}: {detail}") from exc


class Registry:
    """All registered components, by kind. Built once per plugin set; read-only afterwards."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}

    def add(self, spec: ComponentSpec) -> None:
        if spec.kind not in self._specs:
            raise PluginError(f"plugin {spec.plugin!r} ({spec.dist}) registered unknown kind {spec.kind!r}; kinds: {', '.join(KINDS)}")
        existing = self._specs[spec.kind].get(spec.name)
        if existing is not None:
            same = (existing.dist, existing.version) == (spec.dist, spec.version)
            fix = (f"a bug in {spec.dist}: report it to its authors" if same
                   else "uninstall one of them or disable it with FACEREP_DISABLE_PLUGINS")
            raise RegistrationCollisionError(
                f"{spec.kind} {spec.name!r} is registered twice: by {existing.dist} {existing.version} "
                f"(plugin {existing.plugin!r}, {existing.target}) and by {spec.dist} {spec.version} "
                f"(plugin {spec.plugin!r}, {spec.target}); {fix}"
            )
        self._specs[spec.kind][spec.name] = spec

    def discard_plugin(self, plugin: str) -> None:
        """Forget every component ``plugin`` registered (its registration failed part-way)."""
        for table in self._specs.values():
            for name in [n for n, spec in table.items() if spec.plugin == plugin]:
                del table[name]

    def specs(self, kind: str | None = None) -> list[ComponentSpec]:
        kinds = KINDS if kind is None else (kind,)
        return [spec for k in kinds for _, spec in sorted(self._specs[k].items())]

    def get(
        self, kind: str, name: str, *, installed_plugins: Iterable[str] = (), skipped_plugins: Mapping[str, str] | None = None
    ) -> ComponentSpec:
        """Find a component by qualified name, or by short name when that is unique.

        ``skipped_plugins`` maps the name of each plugin that is not loaded to why (``"plugin 'frl'
        (facerep-frl 0.1.0) was skipped: ..."``): asking for ``frl.x`` then says that instead of
        only "unknown", and an unknown short name lists them.
        """
        skipped = dict(skipped_plugins or {})
        if kind not in self._specs:
            raise ComponentNotFoundError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        table = self._specs[kind]
        if name in table:
            return table[name]
        matches = [spec for spec in table.values() if spec.short_name == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(f"{s.name} ({s.dist})" for s in matches)
            raise ComponentNotFoundError(f"{kind} name {name!r} is ambiguous: {names}; use the qualified name")
        plugin, dot, _ = name.partition(".")
        if dot and plugin in skipped:
            raise ComponentNotFoundError(f"unknown {kind} {name!r}: {skipped[plugin]}")
        candidates = list(table) + [s.short_name for s in table.values()]
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
        hint = f"did you mean: {', '.join(dict.fromkeys(close))}? " if close else ""
        available = ", ".join(table) or "none"
        plugins = ", ".join(installed_plugins) or "none"
        skipped_note = f"Skipped plugins: {'; '.join(skipped.values())}. " if skipped else ""
        raise ComponentNotFoundError(
            f"unknown {kind} {name!r}. {hint}Registered {kind}s: {available}. Installed plugins: {plugins}. {skipped_note}"
            f"A plugin providing it may be missing (pip install it) or disabled; see `facerep list`."
        )


class Registrar:
    """What a plugin's ``facerep_register`` hook receives: one method per component kind.

    Each method takes the short name (namespaced with the plugin's name by core), the import
    string of the target (a class or factory) and optionally the import string of the frozen attrs
    params class the target takes as its first argument.

    With a ``duplicates`` list, a name registered a second time is recorded there (the first
    registration is kept) instead of raising :class:`RegistrationCollisionError`.
    """

    def __init__(self, registry: Registry, plugin: str, dist: str, version: str, *, duplicates: list[str] | None = None) -> None:
        self._registry = registry
        self._plugin = plugin
        self._dist = dist
        self._version = version
        self._duplicates = duplicates

    def add(self, kind: str, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        if not name or "." in name or not name.replace("_", "").replace("-", "").isalnum():
            raise PluginError(f"plugin {self._plugin!r} ({self._dist}): invalid component name {name!r}; use letters, digits, _ or -")
        if ":" not in target and "." not in target:
            raise PluginError(f"plugin {self._plugin!r} ({self._dist}): {kind} {name!r} target {target!r} is not an import string")
        spec = ComponentSpec(kind, f"{self._plugin}.{name}", target, params, self._plugin, self._dist, self._version, summary)
        try:
            self._registry.add(spec)
        except RegistrationCollisionError as exc:
            if self._duplicates is None:
                raise
            self._duplicates.append(str(exc))  # the first registration stays; this one is skipped

    def dataset(self, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        self.add("dataset", name, target, params=params, summary=summary)

    def backbone(self, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        self.add("backbone", name, target, params=params, summary=summary)

    def objective(self, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        self.add("objective", name, target, params=params, summary=summary)

    def head(self, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        self.add("head", name, target, params=params, summary=summary)

    def task(self, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        self.add("task", name, target, params=params, summary=summary)

    def protocol(self, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        self.add("protocol", name, target, params=params, summary=summary)
