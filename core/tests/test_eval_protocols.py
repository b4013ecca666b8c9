"""Transfer protocols (linear probe, frozen + head, fine-tune) driving a task, the evaluation grid,
the report and ``facerep data check``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.data.check import BLUR_THRESHOLD, check_dataset, cross_split_duplicates, sharpness
from facerep.eval.label_task import LabelTask, classification_metrics
from facerep.eval.linear_probe import LinearProbe, LinearProbeParams
from facerep.eval.protocols import FineTune, FineTuneParams, FrozenHead, FrozenHeadParams, backbone_param_groups
from facerep.eval.report import render_report, summary_rows
from facerep.types import DatasetInfo, Sample


class GreyFaces:
    """Three classes told apart by grey level (learnable through random conv features)."""

    def __init__(self, n: int, seed: int, size: int = 32, blur: bool = False, split: str = "train") -> None:
        rng = np.random.default_rng(seed)
        self.y = np.arange(n) % 3
        base = np.array([40, 128, 215])[self.y]
        self.images = np.clip(base[:, None, None, None] + rng.normal(0, 25, (n, size, size, 3)), 0, 255).astype(np.uint8)
        if blur:
            self.images = np.repeat(np.repeat(self.images[:, :, ::8], 8, axis=2), 1, axis=1)
        self.info = DatasetInfo(name="grey", split=split, labels=("expression",), class_names={"expression": ("dark", "mid", "light")})

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=self.images[i], expression=int(self.y[i]), meta={"path": f"grey://{i}"})

    def label_array(self, field: str) -> np.ndarray | None:
        return self.y if field == "expression" else None


class GradientLinearTask(LabelTask):
    """The same classification, but its linear mode is a head trained by gradient descent."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.probe_label = None


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return TimmBackbone(TimmBackboneParams(model="resnet10t"))


def test_classification_metrics_by_hand():
    m = classification_metrics(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ("a", "b", "c"))
    assert m["acc"] == 0.75 and m["acc_c"] == 0.5 and m["mean_class_acc"] == pytest.approx((1 + 1 + 0.5) / 3)
    ml = classification_metrics(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [1, 1]]), ("x", "y"))
    assert ml == {"mean_acc": 0.75, "acc_x": 1.0, "acc_y": 0.5}


def test_linear_probe_scores_the_task_through_its_predict_and_evaluate(backbone):
    train, test = GreyFaces(60, 0), GreyFaces(30, 1, split="test")
    out = LinearProbe(LinearProbeParams(l2_grid=(1e-3, 1e-1))).run(backbone, LabelTask("expression", train), train, test)
    assert out.metrics["acc"] >= 0.9 and "acc_light" in out.metrics and out.metrics["l2"] in (1e-3, 1e-1)
    assert len(out.predictions) == 30
    # shuffled training labels cannot be learnt: the probe is really reading the labels it is given
    class Shuffled(GreyFaces):
        def label_array(self, field):
            return np.random.default_rng(0).permutation(self.y)
    bad = Shuffled(60, 0)
    low = LinearProbe(LinearProbeParams(l2_grid=(1e-3,))).run(backbone, LabelTask("expression", bad), bad, test)
    assert low.metrics["acc"] < 0.7


def test_frozen_head_trains_on_cached_features_and_selects_on_val_only(backbone):
    train, val, test = GreyFaces(48, 0), GreyFaces(24, 2, split="val"), GreyFaces(30, 1, split="test")
    task = LabelTask("expression", train, 32)
    calls = []
    orig = backbone.forward

    def counting(x):
        calls.append(len(x))
        return orig(x)
    backbone.forward = counting
    try:
        params = FrozenHeadParams(epochs=20, min_steps=0, batch_size=16, lr=3e-3, val_every=5)
        out = FrozenHead(params).run(backbone, task, train, test, val)
    finally:
        del backbone.forward
    assert sum(calls) == 48 + 24 + 30  # each image through the backbone once: features are cached
    assert out.metrics["acc"] >= 0.9 and out.metrics["best_acc"] >= 0.9
    assert 0 <= out.metrics["best_epoch"] < 20 and "val_acc" in out.metrics
    losses = [r["loss"] for r in out.history]
    assert losses[-1] < losses[0] * 0.5
    assert sum("val_acc" in r for r in out.history) == 4  # every 5 epochs


def test_linear_mode_without_probe_label_trains_the_linear_head(backbone):
    train, test = GreyFaces(48, 0), GreyFaces(30, 1, split="test")
    task = GradientLinearTask("expression", train, 32)
    out = LinearProbe(LinearProbeParams(batch_size=16)).run(backbone, task, train, test)
    assert out.metrics["acc"] >= 0.9 and "l2" not in out.metrics and out.history


def test_finetune_updates_a_copy_of_the_backbone_with_layer_decayed_groups(backbone):
    train, test = GreyFaces(24, 0), GreyFaces(12, 1, split="test")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    out = FineTune(FineTuneParams(epochs=3, min_steps=0, batch_size=8, lr=1e-2, backbone_lr=1e-3)).run(
        backbone, LabelTask("expression", train, 32), train, test)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # caller's weights untouched
    assert len(out.history) == 3 and out.history[-1]["loss"] < out.history[0]["loss"] and len(out.predictions) == 12
    vit = TimmBackbone(TimmBackboneParams(model="vit_tiny_patch16_224", img_size=32))
    groups = backbone_param_groups(vit, 1e-3, 0.05, 0.5)
    lrs = sorted({g["lr"] for g in groups})
    depth = len(vit.model.blocks)
    assert lrs[-1] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-3 * 0.5**depth)  # embeddings decayed most
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in vit.parameters())


def test_data_check_reports_blur_duplicates_and_label_ranges():
    sharp = GreyFaces(12, 0)
    assert sharpness(sharp.images[0]) > BLUR_THRESHOLD
    rep = check_dataset(sharp)
    assert rep["samples"] == 12 and rep["unreadable"] == 0 and rep["height"] == [32, 32, 32]
    assert rep["labels"]["expression"] == {"annotated": 12, "min": 0, "max": 2, "classes": 3, "smallest_class": 4}
    assert rep["problems"] == [] and rep["warnings"] == []
    blurred = check_dataset(GreyFaces(12, 0, blur=True))
    assert any("blurred" in w for w in blurred["warnings"]) and blurred["problems"] == []
    face48 = GreyFaces(1, 3, size=48).images[0]
    big = np.kron(face48, np.ones((8, 8, 1), np.uint8))  # the same face at 8x the resolution
    assert sharpness(big) == pytest.approx(sharpness(face48), rel=1e-4)  # compared at one scale (48 px)
    assert np.abs(np.diff(big.astype(float).mean(2), axis=1)).mean() < sharpness(face48) / 4  # raw differences would not be
    test = GreyFaces(6, 5, split="test")
    test.images[2] = sharp.images[7]  # a train image leaked into test
    cross = cross_split_duplicates([rep, check_dataset(test)])
    assert len(cross) == 1 and cross[0].startswith("1 image(s) of grey:train are pixel-identical to images of grey:test (e.g. #7 and #2)")


def test_data_check_names_unreadable_files_and_bad_classes(tmp_path):
    from facerep.errors import DataError

    class Broken(GreyFaces):
        def __getitem__(self, i):
            if i == 3:
                raise DataError(f"{tmp_path}/3.jpg: cannot decode image")
            s = super().__getitem__(i)
            s.expression = 5 if i == 4 else s.expression
            return s
    rep = check_dataset(Broken(6, 0))
    assert rep["unreadable"] == 1 and "3.jpg: cannot decode image" in rep["errors"][0]
    assert any("class ids 0..5 outside the 3 named classes" in p for p in rep["problems"])


def test_summary_rows_average_seeds_and_report_renders_again(tmp_path):
    def rec(seed, value, fraction):
        return {"name": "fer/expression", "weights": "random init", "protocol": "core.linear_probe", "fraction": fraction, "shots": None,
                "seed": seed, "n_train": 10, "test": "t", "primary": "acc", "higher_is_better": True, "metrics": {"acc": value},
                "seconds": 1.0, "task": "expression", "label": "expression", "train": "x"}
    records = [rec(0, 0.5, 0.1), rec(1, 0.7, 0.1), rec(0, 0.9, 1.0)]
    rows = summary_rows(records)
    assert [(r["fraction"], r["mean"], r["seeds"]) for r in rows] == [(0.1, pytest.approx(0.6), 2), (1.0, 0.9, 1)]
    # sample std (ddof 1), and the t interval of two seeds without outcomes: 0.6 +- 12.706 * 0.1
    assert rows[0]["std"] == pytest.approx(0.02**0.5) and rows[0]["high"] == pytest.approx(0.6 + 12.706 * 0.1, abs=1e-3)
    (tmp_path / "results.json").write_text(json.dumps({"title": "t", "results": records}))
    text = render_report(tmp_path)
    assert "| fer/expression | random init | core.linear_probe | 0.1 | 10 | t | acc ↑ | 0.6000 [-0.6706, 1.8706] | 2 | 2 |" in text
    assert "| 1 | 10 | t | acc ↑ | 0.9000 | 1 |" in text, "one seed, no outcomes: no interval"
    assert (tmp_path / "plots" / "fer_expression.png").stat().st_size > 1000


def test_gap_to_random_init_is_paired_by_seed_signed_and_plotted(tmp_path):
    from facerep.eval.report import gap_rows

    def rec(weights, seed, fraction, value, name="afw", higher=False):
        return {"name": name, "weights": weights, "protocol": "core.linear_probe", "fraction": fraction, "shots": None, "seed": seed,
                "n_train": 10, "test": "t", "primary": "nme", "higher_is_better": higher, "metrics": {"nme": value}, "seconds": 1.0}
    records = [rec("random init", 0, 0.1, 0.30), rec("random init", 1, 0.1, 0.20), rec("pretrained", 0, 0.1, 0.25),
               rec("pretrained", 1, 0.1, 0.18), rec("random init", 0, 1.0, 0.10), rec("pretrained", 0, 1.0, 0.12),
               rec("pretrained", 2, 0.1, 0.01)]  # seed 2 has no random-init partner: left out
    records += [rec("random init", 0, 0.5, 0.10), rec("random init", 1, 0.5, 0.11), rec("pretrained", 0, 0.5, 0.20),
                rec("pretrained", 1, 0.5, 0.21)]  # worse by 0.1 on both seeds: a loss the interval resolves
    rows = gap_rows(records)
    small, half, full = rows
    assert half["gap"] == pytest.approx(-0.1) and half["high"] < 0 and not half["marked"]
    # lower is better: gaps +0.05 and +0.02 (pretrained lower), mean 0.035, SE = std(ddof 1) / sqrt 2 = 0.015,
    # no outcomes: the paired t interval with 1 df, 0.035 +- 12.706 * 0.015, holds zero: not marked
    assert small["fraction"] == 0.1 and small["seeds"] == 2 and small["gap"] == pytest.approx(0.035)
    assert small["high"] - small["gap"] == pytest.approx(12.706 * 0.015, abs=1e-4) and not small["marked"]
    assert small["relative"] == pytest.approx(0.035 / 0.25) and small["basis"] == "seeds only"
    assert full["gap"] == pytest.approx(-0.02) and not full["marked"]
    (tmp_path / "results.json").write_text(json.dumps({"title": "t", "results": records}))
    text = render_report(tmp_path)
    assert "| afw | core.linear_probe | pretrained | 0.1 | nme | 0.2500 | +0.0350 [-0.1556, +0.2256] | +14.0 % |  |" in text
    assert "| afw | core.linear_probe | pretrained | 1 | nme | 0.1000 | -0.0200 (no interval: 1 seed, no outcomes) | -20.0 % |  |" in text
    assert "| afw | core.linear_probe | pretrained | 0.5 | nme | 0.1050 | -0.1000 [-0.1000, -0.1000] | -95.2 % | worse |" in text
    assert "3 comparisons: about 0.1 false marks are expected by chance" in text
    assert (tmp_path / "plots" / "gap_to_random_init.png").stat().st_size > 1000


def test_feature_cache_runs_each_image_through_the_backbone_once_per_input_kind(backbone):
    from facerep.data.subset import Subset
    from facerep.eval.protocols import feature_cache

    train, test = GreyFaces(30, 0), GreyFaces(12, 1, split="test")
    task = LabelTask("expression", train, 32)
    calls = []
    orig = backbone.forward

    def counting(x):
        calls.append(len(x))
        return orig(x)
    backbone.forward = counting
    try:
        with feature_cache():
            scores = []
            for idx in (np.arange(0, 30, 3), np.arange(30)):  # a subset, then the whole pool
                for proto in (LinearProbe(LinearProbeParams(l2_grid=(1e-2,))), FrozenHead(FrozenHeadParams(epochs=1, min_steps=0))):
                    scores.append(proto.run(backbone, task, Subset(train, idx), test).metrics["acc"])
        cached_calls = sum(calls)
        calls.clear()
        uncached = LinearProbe(LinearProbeParams(l2_grid=(1e-2,))).run(backbone, task, train, test).metrics["acc"]
    finally:
        del backbone.forward
    assert cached_calls == 2 * (30 + 12)  # pooled once and selected once per image, not once per run
    assert sum(calls) == 30 + 12 and uncached == scores[2]  # same numbers with and without the cache


def test_backbone_layers_apply_per_entry_and_fall_back_to_the_backbones_own(monkeypatch, tmp_path):
    from facerep.config import RunConfig, structure
    from facerep.eval import runner
    from facerep.plugins import get_plugins

    seen = []
    def record(ev, name, task, train, test, val, protocols, names, backbone, out, w, saving=None):
        seen.append(backbone.params.layers)
        return []

    monkeypatch.setattr(runner, "_run_entry", record)
    entry = {"protocol": "core.knn", "train": {"name": "core.synthetic", "params": {"n": 8}},
             "test": {"name": "core.synthetic", "params": {"n": 8, "split": "test"}}, "label": "expression"}
    cfg = structure({"evaluate": [dict(entry, backbone_layers=[1, 3]), entry]}, RunConfig)
    vit = TimmBackbone(TimmBackboneParams(model="vit_tiny_patch16_224", img_size=32, layers=(2,), model_kwargs={"depth": 4}))
    runner.evaluate_entries(cfg, vit, get_plugins(), tmp_path, "random init")
    assert seen == [(1, 3), (2,)]
