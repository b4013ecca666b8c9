"""The module named by the ``facerep`` entry point ``frl``: hook implementations only.

Nothing heavy is imported here (no torch, no timm): components are registered as import strings
and loaded only when a run builds them.
"""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import API_VERSION, hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {
        "api_version": API_VERSION,
        "summary": "SwAV and MoCo-v2 on uncurated faces (Bulat et al., ECCV 2022)",
    }


@hookimpl
def facerep_register(registrar) -> None:
    registrar.objective(
        "swav",
        "facerep_frl.swav:SwAVObjective",
        params="facerep_frl.swav:SwAVParams",
        summary="SwAV swapped prediction with multi-crop and Sinkhorn-Knopp codes (Caron et al. 2020)",
    )
    registrar.objective(
        "moco_v2",
        "facerep_frl.moco:MoCoV2Objective",
        params="facerep_frl.moco:MoCoV2Params",
        summary="MoCo-v2 InfoNCE with momentum key encoder and queue (He et al. 2020; Chen et al. 2020)",
    )


@hookimpl
def facerep_config_paths() -> list[Path]:
    return [Path(__file__).parent / "configs"]
