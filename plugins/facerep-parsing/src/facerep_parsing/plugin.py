"""Entry point of facerep-parsing: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from facerep import hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": "1.5", "summary": "face parsing: CelebAMask-HQ reader, FaRL pyramid + mmseg UPerHead, dataset-level F1"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.dataset("celebamask_hq", "facerep_parsing.celebamask:CelebAMaskHQ", params="facerep_parsing.celebamask:CelebAMaskParams",
                      summary="CelebAMask-HQ, 19 classes: class-index PNG masks or the original per-part mask files")
    registrar.dataset("lapa", "facerep_parsing.lapa:LaPa", params="facerep_parsing.lapa:LaPaParams",
                      summary="LaPa, 11 classes, with its 106 landmarks")
    registrar.task("segmentation", "facerep_parsing.task:FaceParsing", params="facerep_parsing.task:ParsingParams",
                   summary="face parsing: FPN + UPerHead (mmseg) or linear; per-class F1 over the dataset, mean over foreground")
