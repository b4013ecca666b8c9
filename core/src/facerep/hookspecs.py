"""The plugin author's manual: every hook a facerep plugin may implement.

A plugin is a plain module with ``@hookimpl`` functions, declared in the plugin's
``pyproject.toml``::

    [project.entry-points.facerep]
    myplugin = "facerep_myplugin.plugin"

The entry-point name (``myplugin``) is the plugin's namespace: every component it registers is
known as ``myplugin.<name>``; the short ``<name>`` works as long as no other plugin uses it.

Keep ``plugin.py`` tiny: import nothing heavy (no torch, no timm) at module level. Components are
registered as *import strings* and imported only when a run builds them, so ``facerep --help`` and
``facerep list`` stay fast and one broken plugin cannot take the others down.

Hooks are called with keyword arguments only. An implementation may accept fewer arguments than
the spec lists (pluggy's opt-in arguments), so new arguments can be added to a hook without
breaking old plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import argparse

    from facerep.registry import Registrar

PROJECT = "facerep"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Version of the hook and component API (``MAJOR.MINOR``). A plugin declares the version it was
#: written for in :func:`facerep_plugin_info`. A minor release only adds (optional hooks, optional
#: component methods, new fields with defaults); a major one may change or remove. Core loads a
#: plugin written for its major version and the same or an older minor, and refuses the others.
#: History: 1.0 first release; 1.1 ``Objective.param_groups()`` and ``ParamGroup``, validators for
#: params classes (``facerep.config.positive`` ...), ``facerep.data.io``; 1.2 view transforms may return
#: ``facerep.types.Views`` (images + per-sample ``extras`` passed as ``Objective.forward(views,
#: extras=...)``), optional ``Objective.manifest()``; 1.3 ``facerep.prototypes`` (self-distillation
#: over learnable prototypes: head, loss, centre); 1.4 optional ``Objective.after_micro_batch`` (gradient
#: accumulation, ``train.accumulate_steps``); 1.5 optional ``Task.outcomes`` (per-item terms of the
#: primary metric, ``facerep.eval.outcomes``). See CHANGELOG.md.
API_VERSION = "1.5"


@hookspec
def facerep_plugin_info() -> dict[str, Any]:
    """Describe the plugin.

    Return a dict with ``api_version`` (required, e.g. ``"1.0"``: the facerep API the plugin was
    written for) and optionally ``summary`` (one line shown by ``facerep list``). Name, distribution
    and version are taken from the package metadata.

    A plugin whose ``api_version`` has a different major version than core's
    :data:`API_VERSION` is reported as incompatible and skipped.
    """


@hookspec
def facerep_register(registrar: Registrar) -> None:
    """Register the plugin's components.

    Called once per plugin when the component registry is built. Use the registrar's methods,
    one per component kind, with an import string ``"package.module:Attribute"`` and, when the
    component takes parameters, the import string of its frozen attrs *params* class::

        @hookimpl
        def facerep_register(registrar):
            registrar.objective("swav", "facerep_frl.swav:SwAVObjective",
                                params="facerep_frl.swav:SwAVParams",
                                summary="SwAV swapped prediction (Caron et al. 2020)")

    Kinds and how core builds them (``params`` is an instance of the params class, or None):

    - ``dataset``:   ``target(params) -> FaceDataset``
    - ``backbone``:  ``target(params) -> Backbone``
    - ``objective``: ``target(params, backbone=backbone) -> Objective``
    - ``head``:      not built by core; a task's ``build_head`` makes its heads (registering a
      head only lists it in ``facerep list``)
    - ``task``:      ``target(params) -> Task``; protocols call ``task.build_head(backbone, train,
      linear=...)`` (see ``facerep.protocols.Task`` and ``docs/evaluation.md``)
    - ``protocol``:  ``target(params) -> Protocol``; ``run(backbone, task, train, test, val)``

    Give your params class a ``tiny()`` classmethod returning CPU-sized parameters: the
    ``facerep.testing`` contract suites use it to exercise every registered component.

    Nothing is imported here; a wrong import string is reported by ``facerep plugins check`` and
    when a run resolves its components. Registering a name twice, or a name another plugin
    already registered, is an error naming both distributions.
    """


@hookspec
def facerep_config_paths() -> list[Path]:
    """Return folders of preset YAML configs shipped with the plugin.

    A preset ``<folder>/<stem>.yaml`` is run as ``facerep run <plugin>/<stem>``.
    """


@hookspec
def facerep_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``facerep`` command line.

    ``subparsers`` is the argparse sub-parser collection of the top-level parser; add a parser and
    set its ``func`` default to a callable taking the parsed ``argparse.Namespace`` and returning an
    exit code.
    """
