"""Generate a new plugin package: the code behind ``facerep plugins new objective NAME``.

:func:`new_plugin` writes a complete, installable third-party plugin in the shape of
``integration_tests/plugins/facerep-example-objective``::

    facerep-NAME/
        pyproject.toml                    entry point ``NAME = "facerep_NAME.plugin"``
        README.md
        src/facerep_NAME/__init__.py
        src/facerep_NAME/plugin.py        hook implementations only (imports no torch)
        src/facerep_NAME/objective.py     a working two-view NT-Xent (SimCLR) objective to edit
        src/facerep_NAME/configs/NAME_synthetic.yaml   a ~20-step CPU preset on synthetic faces
        tests/test_objective.py           the facerep.testing contract suite + a hand-checked loss

so that ``pip install -e ./facerep-NAME``, ``pytest facerep-NAME/tests`` and
``facerep run NAME/NAME_synthetic`` work straight away, offline. It never overwrites anything: a
destination folder that exists and is not empty is refused.

The templates are files shipped with facerep, ``facerep/templates/plugin/<kind>/``, laid out as the
plugin they make (``package/`` stands for ``src/<package>/``) and named ``<file>.tmpl`` (so that no
tool takes them for code of facerep's own). :mod:`string.Template` fills their ``${...}``
placeholders (``$$`` is a literal dollar): ``${name}`` (the plugin's name and namespace),
``${comp}`` (the objective's short name), ``${Camel}`` (the name in CamelCase, for classes),
``${package}``, ``${dist}``, ``${core_req}`` (the facerep-core version range) and ``${api_version}``.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.resources
import keyword
import re
import warnings
from pathlib import Path
from string import Template

from facerep.errors import ConfigError

__all__ = ["KINDS", "new_plugin", "plugin_files"]

#: Component kinds :func:`new_plugin` can generate.
KINDS = ("objective",)

#: A plugin name: the entry-point name, the namespace of its components and part of the package name.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: Namespaces a new plugin may not take (core's built-ins live in ``core``).
_RESERVED = frozenset({"core", "facerep"})

#: Per kind: each template under ``templates/plugin/<kind>/`` (less ``.tmpl``) and the path it is
#: written to in the new plugin (a ``string.Template`` too).
_LAYOUT = {
    "objective": {
        "pyproject.toml": "pyproject.toml",
        "README.md": "README.md",
        "package/__init__.py": "src/${package}/__init__.py",
        "package/plugin.py": "src/${package}/plugin.py",
        "package/objective.py": "src/${package}/objective.py",
        "package/configs/synthetic.yaml": "src/${package}/configs/${name}_synthetic.yaml",
        "tests/test_objective.py": "tests/test_objective.py",
    },
}


def _core_requirement() -> str:
    """``>=X.Y,<X.(Y+1)``: the minor series of the installed core (its API may change between them)."""
    from facerep import __version__

    match = re.match(r"(\d+)\.(\d+)", __version__)
    if not match:  # pragma: no cover - core's own version is always X.Y.Z
        raise ConfigError(f"cannot read facerep's version {__version__!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    return f">={major}.{minor},<{major}.{minor + 1}"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 40:
        raise ConfigError(
            f"plugin name {name!r} is not valid: use lowercase letters, digits and underscores, starting with a letter"
            " (at most 40 characters), e.g. 'barlow'"
        )
    if name.endswith("_") or "__" in name:
        raise ConfigError(f"plugin name {name!r} is not valid: no leading, trailing or doubled underscores")
    if name in _RESERVED or keyword.iskeyword(name):
        raise ConfigError(f"plugin name {name!r} is reserved; choose another namespace")


def _warn_if_installed(name: str) -> None:
    try:
        installed = {ep.name: ep for ep in md.entry_points(group="facerep")}
    except Exception:  # pragma: no cover - broken metadata elsewhere must not stop the generator
        return
    if name in installed:
        ep = installed[name]
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed distribution"
        warnings.warn(
            f"a facerep plugin named {name!r} is already installed ({dist}); installing the new package beside it"
            " makes the two collide: rename one of them",
            UserWarning,
            stacklevel=3,
        )


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def plugin_files(kind: str, name: str, *, package: str | None = None) -> dict[str, str]:
    """The files :func:`new_plugin` writes, as ``{relative path: text}`` (nothing is written).

    Raises:
        ConfigError: an unsupported ``kind`` or an invalid ``name`` / ``package``.
    """
    if kind not in KINDS:
        raise ConfigError(f"cannot generate a plugin of kind {kind!r}: supported kinds are {', '.join(KINDS)}")
    _check_name(name)
    package = package or f"facerep_{name}"
    if not package.isidentifier() or keyword.iskeyword(package) or package != package.lower():
        raise ConfigError(f"package {package!r} is not a valid lowercase Python package name")
    if package == "facerep" or package.startswith("facerep."):
        raise ConfigError(f"package {package!r} would shadow facerep itself; choose another one")

    from facerep.hookspecs import API_VERSION

    values = {
        "name": name,
        "comp": name,  # the objective's short name: the component is NAME.NAME
        "Camel": _camel(name),
        "package": package,
        "dist": "facerep-" + name.replace("_", "-"),
        "core_req": _core_requirement(),
        "api_version": API_VERSION,
    }
    folder = importlib.resources.files("facerep").joinpath("templates", "plugin", kind)
    return {Template(path).substitute(values): Template(folder.joinpath(f"{template}.tmpl").read_text(encoding="utf-8")).substitute(values)
            for template, path in _LAYOUT[kind].items()}


def new_plugin(kind: str, name: str, dest: str | Path, *, package: str | None = None) -> Path:
    """Write a new plugin package of ``kind`` named ``name`` into the folder ``dest``.

    Args:
        kind: the component the plugin provides; ``"objective"`` (see :data:`KINDS`).
        name: the plugin's entry-point name and namespace (``barlow``: distribution
            ``facerep-barlow``, package ``facerep_barlow``, objective ``barlow.barlow``, preset
            ``barlow/barlow_synthetic``): lowercase letters, digits and underscores.
        dest: the package folder to create (conventionally ``facerep-<name>``); it must not exist
            or be empty.
        package: the import package name; default ``facerep_<name>``.

    Returns:
        ``dest`` (resolved).

    Raises:
        ConfigError: an unsupported kind, an invalid name, or a ``dest`` that is a file or a folder
            that is not empty (nothing is written then).

    Warns:
        UserWarning: a plugin of that name is already installed (the two would collide).
    """
    files = plugin_files(kind, name, package=package)  # validates before anything touches the disk
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"cannot create the plugin in {dest}: it is a file")
    if dest.is_dir() and any(dest.iterdir()):
        raise ConfigError(
            f"cannot create the plugin in {dest}: the folder exists and is not empty (nothing was written; choose a new folder)"
        )
    _warn_if_installed(name)
    dest.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8", newline="\n") as f:  # "x": never overwrite
            f.write(text)
    return dest
