"""Entry point of facerep-expression: hook implementations only, nothing heavy imported."""

from __future__ import annotations

from facerep import hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": "1.5", "summary": "facial expression: FER2013, RAF-DB, AffectNet; classification and valence-arousal tasks"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.dataset("fer2013", "facerep_expression.fer2013:FER2013", params="facerep_expression.fer2013:FER2013Params",
                      summary="FER2013, 7 expressions, 48x48 grey: Kaggle class-folder export or the original fer2013.csv")
    registrar.dataset("rafdb", "facerep_expression.lists:RAFDB", params="facerep_expression.lists:RAFDBParams",
                      summary="RAF-DB basic: 7 expressions from list_patition_label.txt, aligned images")
    registrar.dataset("affectnet", "facerep_expression.lists:AffectNet", params="facerep_expression.lists:AffectNetParams",
                      summary="AffectNet training/validation CSV: 7 or 8 expressions, face-box crops, valence/arousal in meta")
    registrar.task("classification", "facerep_expression.task:ExpressionClassification", params="facerep_expression.task:ExpressionParams",
                   summary="expression classifier (linear or MLP head); accuracy, per-class and mean class accuracy")
    registrar.task("valence_arousal", "facerep_expression.valence_arousal:ValenceArousal",
                   params="facerep_expression.valence_arousal:ValenceArousalParams",
                   summary="valence and arousal regression (AffectNet); CCC, PCC, RMSE, SAGR per dimension")
