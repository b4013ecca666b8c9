"""``core.self_distill``: the unlabelled pool is exactly the complement of the few-shot subset, the
pool's labels are the teacher's predictions (never its own annotations), the threshold keeps what
the confidence allows, a student that gets no pseudo-label repeats its teacher exactly, and the
protocol runs from a config through ``facerep eval``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.data.subset import Subset, label_array
from facerep.data.synthetic import SyntheticFaces
from facerep.errors import ConfigError
from facerep.eval.label_task import LabelTask, classification_confidence
from facerep.eval.self_distill import PseudoLabelled, SelfDistill, SelfDistillParams, pseudo_labels

HEAD = {"epochs": 3, "min_steps": 0, "batch_size": 16, "lr": 3e-3, "device": "cpu"}


def _setup():
    full, test = SyntheticFaces(n=48, size=32, seed=1), SyntheticFaces(n=16, size=32, seed=2, split="test")
    train = Subset(full, np.arange(0, 48, 4), split="train[0.25]")
    torch.manual_seed(0)
    return full, train, test, TimmBackbone(TimmBackboneParams(model="resnet10t")), LabelTask("expression", full, 32)


def test_pool_is_the_complement_and_pseudo_labels_are_the_teachers_predictions(one_torch_thread):
    _full, train, test, backbone, task = _setup()
    proto = SelfDistill(SelfDistillParams(mode="frozen_head", teacher=HEAD))
    pool = proto._pool(train)
    assert sorted([*pool.indices, *train.indices]) == list(range(48)) and len(pool) == 36
    out = proto.run(backbone, task, train, test)
    assert out.metrics["n_pseudo"] == 36 and out.metrics["n_pseudo_kept"] == 36
    assert {"acc", "teacher_acc", "mean_class_acc", "teacher_mean_class_acc"} <= set(out.metrics)
    # the pool's labels in the student's data are predictions of a head on the frozen backbone
    teacher = proto._protocol(proto.teacher).run(backbone, task, train, test)
    preds, conf = pseudo_labels(teacher.backbone, teacher.head, task, pool)
    relabelled = PseudoLabelled(pool, preds, task)
    truth = label_array(pool, "expression")
    assert [relabelled[i].expression for i in range(36)] == [int(p) for p in preds]
    assert (np.asarray(preds) != truth).any(), "a 3-epoch teacher on 12 faces should make mistakes: the labels are its own"
    assert relabelled.label_array("identity") is None  # nothing the split hides leaks through label_array
    assert ((conf > 0) & (conf <= 1)).all() and len(np.unique(conf)) > 1


def test_threshold_keeps_the_confident_and_a_student_without_pseudo_labels_is_its_teacher(one_torch_thread):
    _full, train, test, backbone, task = _setup()
    strict = SelfDistill(SelfDistillParams(mode="frozen_head", teacher=HEAD, threshold=1.01))
    none = strict.run(backbone, task, train, test)
    alone = strict._protocol(strict.teacher).run(backbone, task, train, test)
    assert none.metrics["n_pseudo_kept"] == 0 and none.metrics["acc"] == none.metrics["teacher_acc"] == alone.metrics["acc"]
    assert [int(p) for p in none.predictions] == [int(p) for p in alone.predictions]
    proto = SelfDistill(SelfDistillParams(mode="frozen_head", teacher=HEAD, threshold=0.3))
    teacher = proto._protocol(proto.teacher).run(backbone, task, train, test)
    _, conf = pseudo_labels(teacher.backbone, teacher.head, task, proto._pool(train))
    some = proto.run(backbone, task, train, test)
    assert some.metrics["n_pseudo_kept"] == int((conf >= 0.3).sum())
    logits = [torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])]
    assert classification_confidence(logits, multilabel=False)[0] == pytest.approx(np.exp(1) / (np.exp(1) + 2))


def test_refusals_name_the_problem():
    full, train, test, backbone, task = _setup()
    with pytest.raises(ConfigError, match="few-shot subset"):
        SelfDistill(SelfDistillParams(mode="frozen_head", teacher=HEAD)).run(backbone, task, full, test)
    with pytest.raises(ConfigError, match=r"protocol\.params\.teacher"):
        SelfDistill(SelfDistillParams(teacher={"epochs": "many"}))
    ids = LabelTask("identity", full, 32)
    with pytest.raises(ConfigError, match="predicts embeddings"):
        SelfDistill(SelfDistillParams(mode="frozen_head", teacher=HEAD)).run(backbone, ids, train, test)


def test_self_distill_from_a_config_through_the_cli(tmp_path):
    cfg = {"name": "sd", "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
           "evaluate": [{"label": "expression",
                         "train": {"name": "core.synthetic", "params": {"n": 48, "size": 32, "seed": 1}},
                         "test": {"name": "core.synthetic", "params": {"n": 16, "size": 32, "seed": 2, "split": "test"}},
                         "protocol": {"name": "core.self_distill", "params": {"mode": "finetune", "teacher": {**HEAD, "epochs": 1},
                                                                              "student": {**HEAD, "epochs": 1}}},
                         "fractions": [0.25], "seeds": [0]}]}
    (tmp_path / "sd.yaml").write_text(yaml.safe_dump(cfg))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FACEREP_")}, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "facerep", "eval", "sd.yaml", "--work-dir", "wd"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    record, teacher = json.loads((tmp_path / "wd" / "results.json").read_text())["results"]
    assert record["protocol"] == "core.self_distill" and 12 <= record["n_train"] < 24  # stratified: ceil per class
    assert record["metrics"]["n_pseudo"] == 48 - record["n_train"] and "teacher_acc" in record["metrics"]
    # the teacher is a row of its own, with its own per-item outcomes, and the report pairs the student with it
    assert teacher["protocol"] == record["versus"] == "core.self_distill:teacher" and teacher["subset"] == record["subset"]
    assert teacher["metrics"]["acc"] == record["metrics"]["teacher_acc"] and teacher["outcomes"] != record["outcomes"]
    from facerep.eval.outcomes import load_outcomes
    from facerep.eval.report import reference_gap_rows, render_report

    assert load_outcomes(tmp_path / "wd" / teacher["outcomes"])[0].metric() == pytest.approx(record["metrics"]["teacher_acc"])
    (gap,) = reference_gap_rows([record, teacher], root=tmp_path / "wd")
    assert gap["reference"] == "core.self_distill:teacher" and gap["basis"] == "items + seeds"
    assert gap["gap"] == pytest.approx(record["metrics"]["acc"] - record["metrics"]["teacher_acc"])
    assert gap["low"] <= gap["gap"] <= gap["high"] and gap["marked"] == (gap["low"] > 0)
    assert "core.self_distill vs core.self_distill:teacher" in render_report(tmp_path / "wd")
