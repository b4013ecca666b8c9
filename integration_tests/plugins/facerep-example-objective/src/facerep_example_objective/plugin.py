"""The plugin module named by the ``facerep`` entry point: hook implementations only.

It imports no torch: components are registered as import strings, so ``facerep list`` stays fast
and a problem in the objective module cannot break discovery of other plugins.
"""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import hookimpl

#: The facerep plugin API this plugin was written against (core refuses another major version).
API_VERSION = "1.0"


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": API_VERSION, "summary": "example third-party plugin: VICReg (Bardes et al. 2022)"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.objective(
        "vicreg",
        "facerep_example_objective.objective:VICReg",
        params="facerep_example_objective.objective:VICRegParams",
        summary="variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022)",
    )


@hookimpl
def facerep_config_paths() -> list[Path]:
    return [Path(__file__).parent / "configs"]
