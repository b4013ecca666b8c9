"""Entry point of facerep-action-units: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from facerep import hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": "1.5", "summary": "facial action units: DISFA and BP4D label files, AU detection (F1) and intensity (ICC(3,1))"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.dataset("disfa", "facerep_action_units.readers:DISFA", params="facerep_action_units.readers:DISFAParams",
                      summary="DISFA: 12 AU intensities (0-5) per frame from ActionUnit_Labels/<subject>/<subject>_au<k>.txt")
    registrar.dataset("bp4d", "facerep_action_units.readers:BP4D", params="facerep_action_units.readers:BP4DParams",
                      summary="BP4D: AU occurrence CSVs <subject>_<task>.csv (0/1, 9 = unknown)")
    registrar.task("detection", "facerep_action_units.task:AUDetection", params="facerep_action_units.task:AUParams",
                   summary="multi-label AU occurrence; F1 per AU and mean")
    registrar.task("intensity", "facerep_action_units.task:AUIntensity", params="facerep_action_units.task:AUParams",
                   summary="AU intensity regression; ICC(3,1) and MSE per AU and mean")
