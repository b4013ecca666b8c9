"""Valence-arousal: CCC / PCC / RMSE / SAGR equal hand-computed values, the loss is MSE + (1 - CCC),
AffectNet's list gives the targets without decoding, and the task passes the task contract on
synthetic faces that carry valence and arousal."""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch

from facerep.errors import DataError
from facerep.testing import TaskContract
from facerep.types import Sample
from facerep_expression.valence_arousal import ValenceArousal, ValenceArousalHead, ValenceArousalParams, affect_metrics, ccc, va_array


def test_ccc_and_the_other_metrics_by_hand():
    y = np.array([-0.5, 0.0, 0.5, 1.0])
    p = np.array([-0.25, 0.25, 0.25, 0.75])
    # means 0.25 and 0.25; population variances: y 0.3125, p 0.125; covariance 0.1875
    assert ccc(y, p) == pytest.approx(2 * 0.1875 / (0.3125 + 0.125 + 0.0))
    shifted = p + 0.5  # the same correlation, a bias: CCC falls by the squared mean difference
    assert ccc(y, shifted) == pytest.approx(2 * 0.1875 / (0.3125 + 0.125 + 0.25))
    m = affect_metrics(np.stack([p, -y], 1), np.stack([y, -y], 1))
    assert m["valence_pcc"] == pytest.approx(0.1875 / np.sqrt(0.3125 * 0.125))
    assert m["valence_rmse"] == pytest.approx(np.sqrt((0.0625 + 0.0625 + 0.0625 + 0.0625) / 4))
    assert m["valence_sagr"] == pytest.approx(3 / 4)  # 0.0 vs 0.25: different signs
    assert m["arousal_ccc"] == pytest.approx(1.0) and m["arousal_rmse"] == 0.0 and m["arousal_sagr"] == 1.0
    assert m["ccc"] == pytest.approx((m["valence_ccc"] + 1.0) / 2)


def test_head_loss_is_mse_plus_one_minus_ccc_per_dimension():
    head = ValenceArousalHead(4)
    out = torch.tensor([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.0]])
    y = torch.tensor([[0.0, -0.1], [0.5, 0.5], [-0.4, 0.2]])
    got = head.loss(out, {"va": y})
    c = [ccc(y[:, j].numpy().astype(np.float64), out[:, j].numpy().astype(np.float64)) for j in range(2)]
    expected = ((out - y) ** 2).mean().item() + (1 - c[0] + 1 - c[1]) / 2
    assert float(got.loss) == pytest.approx(expected, rel=1e-5)
    assert head({"pooled": torch.randn(5, 4) * 100}).abs().max() <= 1.0  # tanh: inside AffectNet's range


def _affectnet(tmp_path):
    from facerep_expression.lists import AffectNet, AffectNetParams

    (tmp_path / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "Manually_Annotated_Images" / "1" / "a.png"), np.full((40, 50, 3), 120, np.uint8))
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    rows = ["1/a.png,10,5,20,20,\"\",1,0.5,-0.25", "1/a.png,0,0,30,30,\"\",2,-0.75,0.125", "1/a.png,0,0,10,10,\"\",9,-2,-2"]
    (tmp_path / "training.csv").write_text(head + "\n".join(rows) + "\n")
    return AffectNet(AffectNetParams(root=str(tmp_path)))


def test_affectnet_targets_come_from_the_list_and_samples_agree(tmp_path):
    ds = _affectnet(tmp_path)
    va = va_array(ds)
    np.testing.assert_array_equal(va, np.array([[0.5, -0.25], [-0.75, 0.125]], np.float32))  # "Uncertain" row (-2) left out
    task = ValenceArousal(ValenceArousalParams(input_size=16))
    prep = task.prepare(ds[1], train=True, rng=np.random.default_rng(0))
    assert prep.image.shape == (16, 16, 3) and np.array_equal(prep.target["va"], va[1])
    m = task.evaluate([np.array([0.5, -0.25]), np.array([-0.75, 0.125])], ds)
    assert m["ccc"] == pytest.approx(1.0) and m["valence_rmse"] == pytest.approx(0.0)
    # per-item outcomes reproduce the CCC (the runner stores them only then)
    pred = [np.array([0.25, -0.5]), np.array([-0.5, 0.375])]
    want = task.evaluate(pred, ds)["ccc"]
    assert task.outcomes(pred, ds).metric() == pytest.approx(want, abs=1e-9) and 0 < want < 1
    with pytest.raises(DataError, match=r"x\.jpg: no valence/arousal"):
        task.prepare(Sample(image=np.zeros((8, 8, 3), np.uint8), expression=1, meta={"path": "x.jpg"}), train=False,
                     rng=np.random.default_rng(0))


class _WithAffect:
    """Synthetic faces with valence and arousal in meta, from their expression and the face's tilt."""

    def __init__(self, dataset):
        self.dataset, self.info = dataset, dataset.info
        self.pairs, self.folds = getattr(dataset, "pairs", None), getattr(dataset, "folds", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Sample:
        s = self.dataset[i]
        s.meta.update(valence=float(np.tanh(s.expression - 3)), arousal=float(np.tanh(0.1 * (s.landmarks[:, 1].mean() - 32))))
        return s


class TestValenceArousalContract(TaskContract):
    component = "expression.valence_arousal"
    params: ClassVar[dict] = {"input_size": 32}

    def dataset(self, split: str, n: int):
        return _WithAffect(super().dataset(split, n))


def test_self_distillation_relabels_valence_and_arousal_where_prepare_reads_them(tmp_path):
    ds = _affectnet(tmp_path)
    task = ValenceArousal(ValenceArousalParams(input_size=16))
    relabelled = task.pseudo_label(ds[0], np.array([-0.1, 0.9], np.float32))
    prep = task.prepare(relabelled, train=False, rng=np.random.default_rng(0))
    np.testing.assert_allclose(prep.target["va"], [-0.1, 0.9], rtol=1e-6)  # not the list's 0.5, -0.25
