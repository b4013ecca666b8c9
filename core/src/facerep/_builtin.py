"""Core's own components, registered through the same hooks as any plugin (name ``core``)."""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import API_VERSION, hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": API_VERSION, "summary": "core built-ins: timm backbone, image folders, synthetic faces, probes"}


@hookimpl
def facerep_config_paths() -> list[Path]:
    """Core presets: ``core/vit_cpu`` (a ViT sized for 2 CPU cores, the base of method presets)."""
    return [Path(__file__).parent / "configs"]


@hookimpl
def facerep_register(registrar) -> None:
    registrar.backbone("timm", "facerep.backbones.timm_backbone:TimmBackbone", params="facerep.backbones.timm_backbone:TimmBackboneParams",
                       summary="any timm ViT or CNN by name")
    registrar.backbone("pixels", "facerep.backbones.pixels:PixelBackbone", params="facerep.backbones.pixels:PixelsParams",
                       summary="parameter-free baseline: area-resized raw pixels (grey 24x24 by default)")
    registrar.dataset("image_folder", "facerep.data.folder:ImageFolder", params="facerep.data.folder:ImageFolderParams",
                      summary="images under one or more folders; labels from class sub-folders or none")
    registrar.dataset("image_shards", "facerep.data.shards:ImageShards", params="facerep.data.shards:ImageShardsParams",
                      summary="unlabelled images in uncompressed tar shards (webdataset layout), read by offset")
    registrar.dataset("synthetic", "facerep.data.synthetic:build_synthetic", params="facerep.data.synthetic:SyntheticParams",
                      summary="SYNTHETIC drawn faces (identity, 68 landmarks, mask, attributes, expression)")
    registrar.protocol("linear_probe", "facerep.eval.linear_probe:LinearProbe", params="facerep.eval.linear_probe:LinearProbeParams",
                       summary="frozen backbone + L2-regularised linear classifier (lambda chosen on a validation split)")
    registrar.protocol("frozen_head", "facerep.eval.protocols:FrozenHead", params="facerep.eval.protocols:FrozenHeadParams",
                       summary="frozen backbone (features cached once) + the task's head, AdamW")
    registrar.protocol("finetune", "facerep.eval.protocols:FineTune", params="facerep.eval.protocols:FineTuneParams",
                       summary="full fine-tuning: layer-wise lr decay for the backbone, separate head lr")
    registrar.protocol("self_distill", "facerep.eval.self_distill:SelfDistill", params="facerep.eval.self_distill:SelfDistillParams",
                       summary="FRL self-distillation: teacher on the labelled subset, pseudo-labels on the rest, student on both")
    registrar.protocol("knn", "facerep.eval.knn:KNNProbe", params="facerep.eval.knn:KNNParams",
                       summary="frozen backbone + cosine k-NN with temperature-weighted votes")
