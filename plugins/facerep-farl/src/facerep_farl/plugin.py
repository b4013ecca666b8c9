"""The module named by the ``facerep`` entry point ``farl``: hook implementations only (nothing
heavy is imported here; components are import strings)."""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import API_VERSION, hookimpl


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": API_VERSION, "summary": "FaRL: image-text contrast + masked image modelling on faces (Zheng et al., CVPR 2022)"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.objective("farl", "facerep_farl.farl:FaRLObjective", params="facerep_farl.farl:FaRLParams",
                        summary="CLIP-style image-text InfoNCE + BEiT-style masked patch-token prediction on one ViT")
    registrar.protocol("zero_shot", "facerep_farl.zero_shot:ZeroShot", params="facerep_farl.zero_shot:ZeroShotParams",
                       summary="attributes from text prompts through a FaRL run's text tower (no labelled training)")
    registrar.dataset("caption_table", "facerep_farl.pairs:CaptionTable", params="facerep_farl.pairs:CaptionTableParams",
                      summary="image-text pairs from a Parquet / TSV / CSV table of image paths and captions")
    registrar.dataset("webdataset", "facerep_farl.pairs:WebDataset", params="facerep_farl.pairs:WebDatasetParams",
                      summary="image-text pairs read by offset from webdataset tar shards (<key>.jpg + <key>.txt)")
    registrar.dataset("captioned", "facerep_farl.captions:CaptionedDataset", params="facerep_farl.captions:CaptionedParams",
                      summary="any dataset with CelebA's 40 attributes, captioned from its labels (offline image-text pairs)")


@hookimpl
def facerep_config_paths() -> list[Path]:
    return [Path(__file__).parent / "configs"]


@hookimpl
def facerep_add_commands(subparsers) -> None:
    p = subparsers.add_parser("farl-import", help="import a FaRL / OpenAI-CLIP ViT-B/16 checkpoint as a facerep backbone + joint embedding")
    p.add_argument("checkpoint", help="FaRL .pth (state_dict, OpenAI layout) or a safetensors of that layout")
    p.add_argument("--out", required=True, help="folder for backbone.safetensors and joint_embedding.safetensors")
    p.set_defaults(func=_import_command)


def _import_command(args) -> int:
    from facerep_farl.weights import write_import

    left_out: list[str] = []
    backbone, joint = write_import(args.checkpoint, args.out, left_out=left_out)
    print(f"wrote {backbone} and {joint}")
    if left_out:  # FaRL's MIM head (pre-training only; FaRL's load_farl ignores it too)
        print(f"left out {len(left_out)} key(s) of FaRL's MIM head (not part of the image or text tower):")
        for name in left_out:
            print(f"  {name}")
    return 0
