"""Official-layout weights (OpenAI CLIP / FaRL ViT-B/16, built here with random weights by
open_clip: no download) load into the facerep backbone + joint embedding and give the same
image and text features; a checkpoint that also carries FaRL's MIM head imports through the CLI,
which lists the keys it left out."""

from __future__ import annotations

import pytest
import torch

from facerep.errors import DataError


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    import open_clip
    from open_clip.transformer import ResidualAttentionBlock

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).eval()
    path = tmp_path_factory.mktemp("clip") / "farl_like.pth"
    state = dict(model.state_dict())
    # FaRL's MIM head as its VisualTransformer names it (FaRL model.py:316-320): pre-training only
    block = ResidualAttentionBlock(768, 12).state_dict()
    state.update({"visual.mask_token": torch.randn(768), **{f"visual.lm_transformer.resblocks.0.{k}": v for k, v in block.items()},
                  "visual.ln_lm.weight": torch.ones(768), "visual.ln_lm.bias": torch.zeros(768),
                  "visual.lm_head.weight": torch.zeros(8192, 768), "visual.lm_head.bias": torch.zeros(8192)})
    torch.save({"state_dict": state}, path)  # FaRL's release wraps the state dict
    return model, path, len(block) + 5, state


def test_imported_weights_give_the_official_features(official, farl_plugins, tmp_path):
    from facerep.checkpoint import load_backbone
    from facerep_farl.text import CaptionTokenizer
    from facerep_farl.weights import write_import
    from facerep_farl.zero_shot import load_joint_embedding

    model, path, n_mim, _ = official
    left_out: list[str] = []
    b_path, j_path = write_import(path, tmp_path / "imported", left_out=left_out)
    assert len(left_out) == n_mim and all(k.startswith("visual.") for k in left_out)
    backbone = load_backbone(b_path).eval()
    joint, _ = load_joint_embedding(str(j_path), backbone.embed_dim)
    x = torch.randn(2, 3, 224, 224)
    ids = torch.from_numpy(__import__("numpy").stack([CaptionTokenizer(77)(c) for c in ("a photo of a smiling woman", "a man")]))
    with torch.no_grad():
        ours_img = joint.encode_image(backbone(x).pooled)
        ours_txt = joint.encode_text(ids)
        ref_img = model.encode_image(x)
        ref_txt = model.encode_text(ids)
    assert (ours_img - ref_img).abs().max() < 1e-4
    assert (ours_txt - ref_txt).abs().max() < 1e-4
    assert torch.isclose(joint.logit_scale, model.logit_scale)
    assert backbone.layer_dims == [768] * 4, "FaRL's pyramid blocks 4/6/8/12"


def test_a_non_clip_checkpoint_is_refused_clearly(tmp_path):
    from facerep_farl.weights import import_clip

    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(DataError, match="not an OpenAI-CLIP / FaRL layout"):
        import_clip(tmp_path / "x.pth")
    with pytest.raises(DataError, match="not found"):
        import_clip(tmp_path / "missing.pth")


def test_farl_import_cli_imports_the_towers_and_lists_the_mim_keys_it_left_out(official, farl_plugins, tmp_path, capsys):
    """FaRL's load_farl ignores the MIM head (model.py:421-427); `facerep farl-import` imports both
    towers from such a checkpoint (exit 0) and prints every key it did not import."""
    from facerep.cli import main

    _, path, n_mim, _ = official
    assert main(["farl-import", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out" / "backbone.safetensors").is_file() and (tmp_path / "out" / "joint_embedding.safetensors").is_file()
    assert f"left out {n_mim} key(s) of FaRL's MIM head" in out
    for name in ("visual.mask_token", "visual.lm_transformer.resblocks.0.attn.in_proj_weight", "visual.ln_lm.weight",
                 "visual.lm_head.bias"):
        assert f"  {name}\n" in out, name


def test_keys_outside_the_towers_and_the_mim_head_are_still_refused(official, monkeypatch):
    import facerep.checkpoint
    from facerep_farl.weights import import_clip

    _, _, _, state = official
    monkeypatch.setattr(facerep.checkpoint, "read_state_dict", lambda path: {**state, "visual.extra_head.weight": torch.zeros(2, 2)})
    with pytest.raises(DataError, match=r"image tower does not fit CLIP ViT-B/16.*extra_head"):
        import_clip("extra.pth")
