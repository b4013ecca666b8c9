"""The module named by the ``facerep`` entry point ``pros``: hook implementations only (nothing
heavy is imported here; components are import strings)."""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import API_VERSION, hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": API_VERSION,
            "summary": "ProS: prototype-based self-distillation on face-dominant images (Di et al., WACV 2024) + face-aware curation"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.objective("pros", "facerep_pros.pros:ProSObjective", params="facerep_pros.pros:ProSParams",
                        summary="student/EMA-teacher ViTs matching similarity distributions over learnable prototypes (multi-crop)")


@hookimpl
def facerep_config_paths() -> list[Path]:
    return [Path(__file__).parent / "configs"]


@hookimpl
def facerep_add_commands(subparsers) -> None:
    from facerep_pros.curate import add_curate_command

    add_curate_command(subparsers)
