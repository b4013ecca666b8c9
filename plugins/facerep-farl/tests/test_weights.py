"""Official-layout weights (OpenAI CLIP / FaRL ViT-B/16, built here with random weights by
open_clip: no download) load into the facerep backbone + joint embedding and give the same
image and text features."""

from __future__ import annotations

import pytest
import torch

from facerep.errors import DataError


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).eval()
    path = tmp_path_factory.mktemp("clip") / "farl_like.pth"
    torch.save({"state_dict": model.state_dict()}, path)  # FaRL's release wraps the state dict
    return model, path


def test_imported_weights_give_the_official_features(official, farl_plugins, tmp_path):
    from facerep.checkpoint import load_backbone
    from facerep_farl.text import CaptionTokenizer
    from facerep_farl.weights import write_import
    from facerep_farl.zero_shot import load_joint_embedding

    model, path = official
    b_path, j_path = write_import(path, tmp_path / "imported")
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
