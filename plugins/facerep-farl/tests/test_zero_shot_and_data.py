"""Real CelebA: the captioned pretraining set, the zero-shot protocol (prompts through an exported
joint embedding) and its majority-class baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerep.data.folder import expand_path

CELEBA = expand_path("${FACEREP_DATA}/celeba")
pytestmark = pytest.mark.skipif(not (CELEBA / "list_attr_celeba.txt").is_file(), reason="needs ../shared/data/celeba (or $FACEREP_DATA)")
pytest.importorskip("facerep_attributes", reason="CelebA comes from the facerep-attributes plugin")


def test_captioned_celeba_writes_captions_from_each_images_labels(farl_plugins):
    from facerep_farl.captions import CaptionedDataset, CaptionedParams, attribute_caption

    ds = CaptionedDataset(CaptionedParams(dataset={"name": "attributes.celeba", "params": {"stop": 20}}))
    assert len(ds) == 20 and "caption" in ds.info.labels
    s = ds[3]
    assert s.caption == attribute_caption(s.attributes, ds.names) and s.caption.startswith("a photo of")
    male = ds.names.index("Male")
    assert (" man" in s.caption) == bool(s.attributes[male])


def test_the_cpu_preset_captions_only_the_pretraining_range(farl_plugins):
    from facerep.config import find_config, load_config, structure
    from facerep_farl.captions import CaptionedParams

    cfg, _ = load_config(find_config("farl/farl_vit_cpu"))
    params = structure(cfg.data.params, CaptionedParams)
    assert params.dataset["params"]["stop"] <= 8000, "CelebA 008001-010000 is the attribute test split"


def test_zero_shot_decides_by_the_closer_prompt_or_the_bayes_rule_and_reports_the_majority_baseline(farl_plugins, tmp_path):
    from facerep.build import build, resolve
    from facerep.checkpoint import export_module
    from facerep.config import ComponentConfig, unstructure
    from facerep.testing import build_objective
    from facerep_farl.captions import attribute_prompts
    from facerep_farl.farl import FaRLParams
    from facerep_farl.zero_shot import ZeroShot, ZeroShotParams

    obj = build_objective("farl.farl").eval()
    path = export_module(obj.joint, tmp_path / "joint_embedding.safetensors",
                         {"module": "joint_embedding", "objective": {"name": "farl.farl", "params": unstructure(FaRLParams.tiny())}})
    task = build(resolve("task", ComponentConfig("attributes.binary", {"input_size": 32}), "task"))
    train = build(resolve("dataset", ComponentConfig("attributes.celeba", {"stop": 60}), "train"))
    test = build(resolve("dataset", ComponentConfig("attributes.celeba", {"start": 8001, "stop": 8030, "split": "test"}), "test"))
    out = ZeroShot(ZeroShotParams(joint=str(path), batch_size=16, decision="closer")).run(obj.backbone, task, train, test)
    bayes = ZeroShot(ZeroShotParams(joint=str(path), batch_size=16)).run(obj.backbone, task, train, test)
    m = out.metrics
    assert 0 <= m["beats_majority"] <= 40 and 0 < m["mean_acc"] < 1
    assert m["closer_beats_majority"] == m["beats_majority"] == bayes.metrics["closer_beats_majority"]
    y_tr, y_te = train.label_array("attributes"), test.label_array("attributes")
    maj = (y_tr.mean(0) >= 0.5).astype(np.uint8)
    assert np.isclose(m["majority_mean_acc"], (y_te == maj).mean())
    # sample 0 by hand: cosine to the present prompt above cosine to the absent one
    from facerep_farl.text import CaptionTokenizer

    prep = task.prepare(test[0], train=False, rng=np.random.default_rng(0))
    x = obj.backbone.preprocess(torch.from_numpy(prep.image).permute(2, 0, 1)[None].contiguous())
    with torch.no_grad():
        img = torch.nn.functional.normalize(obj.joint.encode_image(obj.backbone(x).pooled), dim=1)[0]
        tok = CaptionTokenizer(FaRLParams.tiny().context_length)
        norm = torch.nn.functional.normalize

        def side(prompts):  # CLIP's prompt ensembling: mean of unit embeddings, renormalised
            return norm(norm(obj.joint.encode_text(torch.from_numpy(np.stack([tok(t) for t in prompts]))), dim=1).mean(0), dim=0)

        prior = train.label_array("attributes").mean(0).clip(1e-4, 1 - 1e-4)
        s = float(obj.joint.scale())
        assert m["logit_scale"] == pytest.approx(s)
        flips = 0
        for i, name in enumerate(train.info.class_names["attributes"]):
            pos, neg = (side(p) for p in attribute_prompts(name))
            margin = float(img @ pos - img @ neg)
            assert out.predictions[0][i] == int(margin > 0), name
            # Bayes rule: log-odds s (c+ - c-) of the two-prompt softmax plus the prior's log-odds
            assert bayes.predictions[0][i] == int(s * margin + np.log(prior[i] / (1 - prior[i])) > 0), name
            flips += bayes.predictions[0][i] != out.predictions[0][i]
        assert flips > 0, "60 CelebA images give priors far from 1/2: the rules must disagree somewhere"
