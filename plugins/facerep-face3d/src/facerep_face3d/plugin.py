"""Entry point of facerep-face3d: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from facerep import hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": "1.5", "summary": "3D face alignment: 300W-LP and AFLW2000-3D (.mat), 68 3D landmarks, NME by yaw bin"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.dataset("aflw2000_3d", "facerep_face3d.readers:AFLW2000", params="facerep_face3d.readers:AFLW2000Params",
                      summary="AFLW2000-3D: image*.jpg + .mat (pt3d_68, Pose_Para), 68 3D landmarks and head pose")
    registrar.dataset("300w_lp", "facerep_face3d.readers:W300LP", params="facerep_face3d.readers:W300LPParams",
                      summary="300W-LP: <subset>/*.jpg + .mat (Pose_Para) and landmarks/<subset>/*_pts.mat (pts_3d)")
    registrar.task("alignment", "facerep_face3d.task:Face3DAlignment", params="facerep_face3d.task:Face3DParams",
                   summary="68 3D landmarks (or 3DMM parameters with a user basis); NME by yaw bin [0,30], [30,60], [60,90] and their mean")
