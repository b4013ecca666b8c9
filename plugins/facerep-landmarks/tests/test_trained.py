"""A landmarks model saved by an evaluation (``save_models: true``) is built again and run on new
faces: the round trip through ``facerep eval`` reproduces the run's own score, and the detector-free
cascade of :class:`TrainedLandmarker` finds the faces' landmarks from a central start box."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from facerep.data.geometry import landmark_box
from facerep.data.synthetic import SyntheticFaces
from facerep.errors import ConfigError, DataError
from facerep.eval.saved import load_trained, predict_samples
from facerep.types import Sample
from facerep_landmarks.metrics import landmark_metrics
from facerep_landmarks.trained import TrainedLandmarker

TRAIN = {"name": "core.synthetic", "params": {"n": 96, "size": 64, "seed": 1}}
TEST = {"name": "core.synthetic", "params": {"n": 24, "size": 64, "seed": 2, "split": "test"}}


def _eval(tmp_path, entry: dict, name: str = "lm") -> subprocess.CompletedProcess:
    cfg = {"name": name, "backbone": {"name": "core.timm", "params": {"model": "resnet10t", "layers": [1, 2, 3, 4]}},
           "evaluate": [{"name": "synthetic-landmarks", "train": TRAIN, "test": TEST, "fractions": [1.0], "seeds": [0], **entry}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FACEREP_")}, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "facerep", "eval", str(path), "--work-dir", str(tmp_path / name)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A ResNet-10t + regression head fine-tuned by ``facerep eval`` on whole synthetic face images
    (``crop: image``) and saved. Short: these tests check what is saved and how it runs, not how
    well it learns (``test_metrics_heads.py`` does that on real faces)."""
    tmp = tmp_path_factory.mktemp("trained")
    res = _eval(tmp, {"task": {"name": "landmarks.alignment", "params": {"input_size": 64, "head": "regression", "crop": "image"}},
                      "protocol": {"name": "core.finetune", "params": {"epochs": 6, "min_steps": 0, "batch_size": 32, "lr": 1e-2,
                                                                       "backbone_lr": 3e-3, "device": "cpu"}},
                      "save_models": True})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    record = json.loads((tmp / "lm" / "results.json").read_text())["results"][0]
    return tmp / "lm" / record["model"], record


def test_saved_model_reproduces_the_runs_score_and_names_what_built_it(saved):
    path, record = saved
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["task"]["name"] == "landmarks.alignment" and side["task"]["params"]["crop"] == "image"
    assert side["backbone"]["name"] == "core.timm" and side["backbone"]["params"]["layers"] == [1, 2, 3, 4]
    assert side["head_spec"] == {"n_points": 68} and side["linear"] is False and side["run"]["fraction"] == 1.0
    trained = load_trained(path.parent)  # the folder works as well as the file
    test = SyntheticFaces(**TEST["params"])
    preds = predict_samples(trained, [test[i] for i in range(len(test))])
    primary = record["primary"]
    assert trained.task.evaluate(preds, test)[primary] == pytest.approx(record["metrics"][primary], rel=1e-5)


def test_landmarker_runs_on_bare_images_and_scores_what_the_run_scored(saved):
    path, record = saved
    test = SyntheticFaces(**TEST["params"])
    gt = np.stack([test[i].landmarks for i in range(len(test))]).astype(np.float64)
    lm = TrainedLandmarker(path, refine=3)  # crop: image needs no box: refine is moot
    found = lm.predict([test[i].image for i in range(len(test))])  # images only: no landmark can leak in
    assert found.shape == (24, 68, 2) and found.dtype == np.float32 and lm.n_landmarks == 68 and lm.whole_image
    assert landmark_metrics(found.astype(np.float64), gt, "68")["nme_inter_ocular"] == pytest.approx(record["metrics"]["nme_inter_ocular"],
                                                                                                    rel=1e-5)
    assert np.ptp(found[:, 30], axis=0).min() > 0.5  # the nose tip moves with the face: not one shape for all
    points, how = lm(test[0].image)
    np.testing.assert_allclose(points, found[0], atol=1e-4)
    assert how == "model"


def test_a_landmark_box_model_crops_around_the_start_box_and_refines(tmp_path):
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.config import ComponentConfig, unstructure
    from facerep.eval.saved import save_trained
    from facerep_landmarks.task import AlignmentParams, LandmarkAlignment

    torch.manual_seed(0)
    bp, tp = TimmBackboneParams(model="resnet10t"), AlignmentParams(input_size=32, head="regression")
    backbone, task = TimmBackbone(bp), LandmarkAlignment(tp)
    head = task.build_head(backbone, None, linear=False, spec={"n_points": 68})
    torch.nn.init.normal_(head.fc.weight, std=0.05)  # not the all-centre start: the points spread
    path = save_trained(tmp_path / "m", backbone, head, backbone_cfg=ComponentConfig("core.timm", unstructure(bp)),
                        task_cfg=ComponentConfig("landmarks.alignment", unstructure(tp)), spec={"n_points": 68}, linear=False)
    face = SyntheticFaces(n=2, size=80, seed=3)[0]
    lm = TrainedLandmarker(path, start_box=(0.25, 0.25, 0.75, 0.75))
    trained = load_trained(path)
    by_hand = predict_samples(trained, [Sample(image=face.image, meta={"landmark_box": [20, 20, 60, 60]})])[0]
    np.testing.assert_allclose(lm(face.image)[0], by_hand, atol=1e-4)
    again = predict_samples(trained, [Sample(image=face.image, meta={"landmark_box": landmark_box(by_hand)})])[0]
    np.testing.assert_allclose(TrainedLandmarker(path, start_box=(0.25, 0.25, 0.75, 0.75), refine=1)(face.image)[0], again, atol=1e-4)
    assert not lm.whole_image and lm.id != TrainedLandmarker(path, refine=1).id


def test_bad_saved_models_and_unsaveable_tasks_are_refused_with_the_file_named(saved, tmp_path):
    path, _ = saved
    with pytest.raises(DataError, match=r"trained model file not found: .*missing\.safetensors"):
        load_trained(tmp_path / "missing.safetensors")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(path.read_bytes()[:1000])
    (broken / "model.json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(DataError, match=r"broken/model\.safetensors: not a readable safetensors"):
        load_trained(broken)
    other = json.loads(path.with_suffix(".json").read_text())
    other["head_spec"] = {"n_points": 5}  # the head tensors are sized for 68
    (broken / "model.safetensors").write_bytes(path.read_bytes())
    (broken / "model.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match=r"the head tensors do not fit"):
        load_trained(broken)
    with pytest.raises(ConfigError, match=r"start_box"):
        TrainedLandmarker(path, start_box=(0.8, 0.2, 0.2, 0.9))
    # a bare label to classify has no head_spec: refused before anything trains
    res = _eval(tmp_path, {"label": "expression", "protocol": {"name": "core.frozen_head", "params": {"epochs": 1}}, "save_models": True},
                name="expr")
    assert res.returncode != 0 and "evaluate.0.save_models" in res.stderr
    assert not (tmp_path / "expr" / "models").exists()


def test_prepare_without_landmarks_needs_a_box_and_is_refused_in_training():
    from facerep_landmarks.task import AlignmentParams, LandmarkAlignment

    task = LandmarkAlignment(AlignmentParams(input_size=32))
    face = Sample(image=np.zeros((80, 60, 3), np.uint8), meta={"path": "x.jpg", "landmark_box": [10, 20, 50, 60]})
    prep = task.prepare(face, train=False, rng=np.random.default_rng(0))
    # the box's centre (30, 40) maps to the crop centre (pixel-centre convention)
    np.testing.assert_allclose(prep.meta["matrix"] @ np.array([30, 40, 1.0]), [15.5, 15.5], atol=1e-9)
    with pytest.raises(DataError, match=r"x\.jpg: no landmarks"):
        task.prepare(face, train=True, rng=np.random.default_rng(0))
