"""The module named by the ``facerep`` entry point ``mcf``: hook implementations only (nothing
heavy is imported here; components are import strings)."""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import API_VERSION, hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": API_VERSION,
            "summary": "MCF: feature-space MIM with a frozen teacher + masked-pair contrast (Wang et al., ACM MM 2023)"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.objective("mcf", "facerep_mcf.mcf:MCFObjective", params="facerep_mcf.mcf:MCFParams",
                        summary="MAE encoder + decoder scored in a frozen teacher's features (x1000) "
                                "+ InfoNCE between randomly masked views")


@hookimpl
def facerep_config_paths() -> list[Path]:
    return [Path(__file__).parent / "configs"]
