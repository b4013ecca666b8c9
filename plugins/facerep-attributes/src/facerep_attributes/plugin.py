"""Entry point of facerep-attributes: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from facerep import hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": "1.5", "summary": "face attributes: CelebA reader, FaRL pooled multi-layer head, mean accuracy over attributes"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.dataset("celeba", "facerep_attributes.celeba:CelebA", params="facerep_attributes.celeba:CelebAParams",
                      summary="CelebA aligned faces with 40 attributes and identities (official annotation files)")
    registrar.dataset("utkface", "facerep_attributes.utkface:UTKFace", params="facerep_attributes.utkface:UTKFaceParams",
                      summary="UTKFace crops: gender as an attribute, age and race from the file name in meta")
    registrar.task("binary", "facerep_attributes.task:FaceAttributes", params="facerep_attributes.task:AttributeParams",
                   summary="binary attributes: FaRL's weighted mean/max/CLS head over layers; mean and per-attribute accuracy")
