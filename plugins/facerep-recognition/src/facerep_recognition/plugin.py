"""Entry point of facerep-recognition: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from facerep import hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": "1.5", "summary": "face verification: LFW pair lists, CosFace/ArcFace heads, 10-fold accuracy, TAR@FAR"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.dataset("lfw", "facerep_recognition.lfw:LFW", params="facerep_recognition.lfw:LFWParams",
                      summary="LFW image folders + an official pair list (View 1 pairsDev*.txt or View 2 pairs.txt)")
    registrar.task("verification", "facerep_recognition.task:FaceVerification",
                   params="facerep_recognition.task:VerificationParams",
                   summary="face verification: embedding + CosFace/ArcFace head, flip-fused cosine scores, 10-fold accuracy, TAR@FAR")
