"""The module named by the ``facerep`` entry point ``lafs``: hook implementations only (nothing
heavy is imported here; components are import strings)."""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import API_VERSION, hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": API_VERSION, "summary": "LAFS: DINO over landmark-patch views for face recognition (Sun et al., CVPR 2024)"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.objective("lafs", "facerep_lafs.lafs:LAFSObjective", params="facerep_lafs.lafs:LAFSParams",
                        summary="self-distillation (DINO head, centring, EMA teacher) over views of landmark patches")
    registrar.backbone("landmark_vit", "facerep_lafs.landmark_vit:LandmarkViT", params="facerep_lafs.landmark_vit:LandmarkViTParams",
                       summary="ViT over patches sampled at facial landmarks (fViT / Part fViT with an external landmarker)")
    registrar.dataset("landmarked", "facerep_lafs.landmarks:LandmarkedDataset", params="facerep_lafs.landmarks:LandmarkedParams",
                      summary="any dataset with landmarks per image from dlib's 68 points or a file, computed once and cached")


@hookimpl
def facerep_config_paths() -> list[Path]:
    return [Path(__file__).parent / "configs"]
