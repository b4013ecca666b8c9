"""Entry point of facerep-landmarks: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from facerep import hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": "1.5", "summary": "2D face landmarks: 300-W .pts and MTFL readers, heatmap/regression heads, NME, FR, AUC"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.dataset("pts_folder", "facerep_landmarks.readers:PtsFolder", params="facerep_landmarks.readers:PtsFolderParams",
                      summary="images + 300-W .pts files (68 points, 1-based), e.g. AFW, LFPW, HELEN, iBUG")
    registrar.dataset("mtfl", "facerep_landmarks.readers:MTFL", params="facerep_landmarks.readers:MTFLParams",
                      summary="MTFL annotation lists: 5 points + gender, smile, glasses, head pose")
    registrar.dataset("wflw", "facerep_landmarks.lists:WFLW", params="facerep_landmarks.lists:WFLWParams",
                      summary="WFLW 98 points (list_98pt_rect_attr_*.txt), face rectangles and the six subset flags")
    registrar.dataset("aflw19", "facerep_landmarks.lists:AFLW19", params="facerep_landmarks.lists:AFLW19Params",
                      summary="AFLW-19 in HRNet's csv format, with the face box for box/diagonal NME")
    registrar.task("alignment", "facerep_landmarks.task:LandmarkAlignment", params="facerep_landmarks.task:AlignmentParams",
                   summary="landmark localisation: FaRL heatmap head (soft-argmax) or regression; NME (4 normalisers), FR, AUC")
