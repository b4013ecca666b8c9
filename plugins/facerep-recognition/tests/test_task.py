"""The verification task: preparation, the identity head, flip fusion, pair scoring (also on
subsets), and a tiny end-to-end run on real CelebA identities and LFW pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _recog_helpers import real_dir, write_lfw
from torch import nn

from facerep.data.geometry import ARCFACE_112
from facerep.data.subset import Subset
from facerep.errors import ConfigError
from facerep.types import DatasetInfo, Sample
from facerep_recognition.lfw import LFW, LFWParams
from facerep_recognition.task import FaceVerification, VerificationHead, VerificationParams


class _Ids:
    """A dataset of identities only (the head reads them through ``label_array``)."""

    def __init__(self, ids: list[int | None]) -> None:
        self.ids = ids
        self.info = DatasetInfo(name="ids", labels=("identity",))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=np.zeros((4, 4, 3), np.uint8), identity=self.ids[i])


class _Pairs(_Ids):
    def __init__(self, n: int, pairs: list[list[int]], folds: list[int] | None = None) -> None:
        super().__init__(list(range(n)))
        self.pairs = np.asarray(pairs, np.int64)
        self.folds = None if folds is None else np.asarray(folds)


class _Backbone:
    embed_dim = 6


def _task(**kw) -> FaceVerification:
    return FaceVerification(VerificationParams(**{"input_size": 32, "embedding_dim": 4, "head_hidden": 8, **kw}))


def test_prepare_resizes_keeps_identity_and_flips_only_in_training():
    img = np.arange(20 * 16 * 3, dtype=np.uint8).reshape(20, 16, 3)
    sample = Sample(image=img, identity=7, meta={"path": "x.jpg"})
    task = _task()
    test = task.prepare(sample, train=False, rng=np.random.default_rng(0))
    assert test.image.shape == (32, 32, 3) and test.target["identity"].dtype == np.int64 and int(test.target["identity"]) == 7
    assert test.meta["matrix"][0, 0] == pytest.approx(2.0) and test.meta["matrix"][1, 1] == pytest.approx(1.6)
    flips = []
    for seed in range(6):
        prep = task.prepare(sample, train=True, rng=np.random.default_rng(seed))
        flipped = np.array_equal(prep.image, test.image[:, ::-1])
        assert flipped or np.array_equal(prep.image, test.image)
        if flipped:  # the matrix follows the mirror: original x = 0 goes to input column 31 - 2 * 0 - 0.5
            assert prep.meta["matrix"][0, 0] == pytest.approx(-2.0)
        flips.append(flipped)
    assert any(flips) and not all(flips)
    assert int(task.prepare(Sample(image=img), train=False, rng=np.random.default_rng(0)).target["identity"]) == -1
    assert not any(np.array_equal(_task(train_flip=False).prepare(sample, train=True, rng=np.random.default_rng(s)).image,
                                  test.image[:, ::-1]) for s in range(6))


def test_center_and_arcface_alignment():
    # center: a 20 (h) x 10 (w) image -> rows 5..14 scaled by 32 / 10
    img = np.zeros((20, 10, 3), np.uint8)
    img[5:15] = 200
    prep = _task(align="center").prepare(Sample(image=img), train=False, rng=np.random.default_rng(0))
    assert prep.image.min() >= 190 and prep.meta["matrix"][0, 0] == pytest.approx(3.2)
    assert prep.meta["matrix"] @ np.array([4.5, 9.5, 1.0]) == pytest.approx([15.5, 15.5])  # centre -> centre
    # arcface: landmarks on the 112 template give the plain 112 -> 56 scaling
    face = Sample(image=np.zeros((112, 112, 3), np.uint8), landmarks=ARCFACE_112.astype(np.float32))
    m = _task(align="arcface", input_size=56).prepare(face, train=False, rng=np.random.default_rng(0)).meta["matrix"]
    assert m == pytest.approx(np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]), abs=1e-4)
    # without landmarks it falls back to resizing
    plain = _task(align="arcface").prepare(Sample(image=np.zeros((64, 64, 3), np.uint8)), train=False, rng=np.random.default_rng(0))
    assert plain.meta["matrix"][0, 0] == pytest.approx(0.5)


def test_head_maps_non_contiguous_identities_and_rejects_unknown_ones():
    task = _task()
    train = Subset(_Ids([42, 7, 3, 7, 100]), np.array([0, 1, 2, 3]))  # a few-shot subset: 100 left out
    head = task.build_head(_Backbone(), train, linear=False)
    assert head.classes.tolist() == [3, 7, 42] and head.classifier.weight.shape == (3, 4)
    assert head.class_index(torch.tensor([42, 3, 7])).tolist() == [2, 0, 1]
    out = head({"pooled": torch.randn(3, 6)})
    assert out.shape == (3, 4)
    loss = head.loss(out, {"identity": torch.tensor([42, 3, 7])})
    assert loss.loss.ndim == 0 and set(loss.logs) == {"loss", "train_acc"}
    idx = torch.tensor([2, 0, 1])  # the classifier's own loss and accuracy on the mapped labels
    assert loss.loss.item() == pytest.approx(head.classifier.loss(out, idx).item(), abs=1e-6)
    assert loss.logs["train_acc"] == pytest.approx(float((head.classifier.cosine(out).argmax(1) == idx).float().mean()))
    with pytest.raises(ValueError, match=r"identity 100 is not one of the 3 training identities"):
        head.loss(out, {"identity": torch.tensor([42, 100, 7])})
    with pytest.raises(ConfigError, match="not every sample has an identity label"):
        task.build_head(_Backbone(), _Ids([1, None]), linear=False)
    with pytest.raises(ConfigError, match="at least 2 identities"):
        task.build_head(_Backbone(), _Ids([5, 5]), linear=False)


def test_head_variants():
    train = _Ids([0, 1])
    lin = _task().build_head(_Backbone(), train, linear=True)
    assert isinstance(lin.embed, nn.Linear) and lin.embed.out_features == 4
    mlp = _task().build_head(_Backbone(), train, linear=False)
    assert [type(m).__name__ for m in mlp.embed] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert mlp.embed[0].out_features == 8
    flat = _task(head_hidden=None).build_head(_Backbone(), train, linear=False)
    assert [type(m).__name__ for m in flat.embed] == ["Linear", "BatchNorm1d"]
    zero = _task(train_head=False, margin="arcface").build_head(_Backbone(), train, linear=False)
    x = torch.randn(2, 6)
    assert torch.equal(zero({"pooled": x}), x) and zero.classifier.weight.shape == (2, 6)
    assert (zero.classifier.kind, zero.classifier.m) == ("arcface", 0.5) and isinstance(zero, VerificationHead)


def test_params_defaults_and_validation():
    p = VerificationParams()
    got = (p.input_size, p.embedding_dim, p.margin, p.s, p.margin_value, p.fars, p.folds, p.head_hidden, p.align)
    assert got == (112, 512, "cosface", 64.0, 0.4, (1e-3, 1e-2), 10, 512, "none")
    assert VerificationParams(margin="arcface").margin_value == 0.5 and VerificationParams(m=0.35).margin_value == 0.35
    with pytest.raises(ValueError, match=r"fars must lie in \(0, 1\), got \[1.0\]"):
        VerificationParams(fars=(1.0,))
    with pytest.raises(ValueError, match="folds must be >= 2"):
        VerificationParams(folds=1)


def test_test_views_and_flip_fused_predictions():
    task = _task()
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).reshape(2, 3, 2, 2)
    views = task.test_views(x)
    assert len(views) == 2 and torch.equal(views[1][..., 0], x[..., 1])
    assert len(_task(flip_test=False).test_views(x)) == 1
    a, b = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 4.0], [1.0, 1.0]])
    preds = task.predict([a, b], [{}, {}])
    assert preds[0] == pytest.approx([0.6, 0.8]) and preds[1] == pytest.approx([2 ** -0.5, 2 ** -0.5])
    assert preds[0].dtype == np.float32


def test_evaluate_scores_pairs_and_handles_subsets():
    # images 0..5; same pairs (0,1), (2,3) score 0.995; different (0,2) 0.0 and (4,5) 0.2.
    # fold 0 {0.995+, 0.0-} is scored at the fold-1 threshold (0.995 + 0.2) / 2, fold 1 at 0.995 / 2: all right
    emb = [np.array(v, np.float32) for v in ([1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 0], [0.2, 0.96**0.5])]
    ds = _Pairs(6, [[0, 1, 1], [2, 3, 1], [0, 2, 0], [4, 5, 0]], folds=[0, 1, 0, 1])
    out = _task(folds=2, fars=(0.5,)).evaluate(emb, ds)
    assert out["acc"] == 1.0 and out["n_pairs"] == 4 and out["auc"] == 1.0 and out["tar@far=5e-1"] == 1.0
    # a subset in the order 0, 2, 3, 1 (image 4, 5 left out): pair (4, 5) is dropped, the others re-indexed
    sub = Subset(ds, np.array([0, 2, 3, 1]))
    got = _task(folds=2)._pairs(sub, "pairs", "folds")
    assert got[0].tolist() == [[0, 3, 1], [1, 2, 1], [0, 1, 0]] and got[1].tolist() == [0, 1, 0]
    out = _task(folds=2, fars=(0.5,)).evaluate([emb[i] for i in (0, 2, 3, 1)], sub)
    # fold 0 {0.995+, 0.0-} at the fold-1 threshold (fold 1 is one 0.995+ pair: just below 0.995): 1.0;
    # fold 1 {0.995+} at the fold-0 threshold 0.4975: 1.0; mean threshold (0.995 + 0.4975) / 2
    assert out["n_pairs"] == 3 and (out["acc_fold0"], out["acc_fold1"], out["acc"]) == (1.0, 1.0, 1.0)
    assert out["threshold"] == pytest.approx((1 / 1.01**0.5) * 0.75, abs=1e-6)
    # too few pairs for the folds: a clear error
    with pytest.raises(ValueError, match="at least 2 folds with pairs, got 1"):
        _task(folds=2).evaluate([emb[i] for i in (0, 1, 2)], Subset(ds, np.array([0, 1, 2])))
    with pytest.raises(ConfigError, match="ids has no verification pairs"):
        _task().evaluate(emb, _Ids([0] * 6))
    with pytest.raises(ValueError, match="5 predictions for 6 images"):
        _task().evaluate(emb[:5], ds)


def test_threshold_from_fit_pairs(tmp_path):
    write_lfw(tmp_path, ["2", "Ann 1 2", "Bob 1 2", "Ann 1 Bob 1", "Ann 2 Bob 2"], file="pairsDevTest.txt")
    write_lfw(tmp_path, ["1", "Cid 1 2", "Cid 1 Dee 1"], file="pairsDevTrain.txt")
    ds = LFW(LFWParams(root=str(tmp_path), fit_pairs="pairsDevTrain.txt", folds=2))
    # images: Ann1 Ann2 Bob1 Bob2 Cid1 Cid2 Dee1. Fit pairs: cos(Cid1, Cid2) = 0.8, cos(Cid1, Dee1) = 0.6 -> threshold 0.7.
    # Scored: Ann1-Ann2 0.75 (same, ok), Bob1-Bob2 1.0 (same, ok), Ann1-Bob1 0.72 (different, accepted: wrong),
    # Ann2-Bob2 = cos(acos 0.75 - acos 0.72) = 0.999 (different, accepted: wrong) -> 0.5
    ann2, bob = [0.75, np.sqrt(1 - 0.75**2)], [0.72, np.sqrt(1 - 0.72**2)]
    emb = [[1, 0], ann2, bob, bob, [1, 0], [0.8, 0.6], [0.6, 0.8]]
    out = _task(folds=2, fars=(0.5,)).evaluate([np.array(e, np.float32) for e in emb], ds)
    assert out["threshold_fit"] == pytest.approx(0.7) and out["acc_fit"] == 0.5 and out["n_pairs"] == 4
    assert _task().groups(ds).tolist() == [0, 0, 1, 1, 2, 2, 3]


# -- a tiny end-to-end run on real data ---------------------------------------------------------------


class _CelebAIds(Subset):
    """CelebA identities from its annotation file (the reader has no ``label_array`` yet)."""

    def label_array(self, field: str) -> np.ndarray | None:
        return np.asarray(self.dataset.identities, np.int64)[self.indices] if field == "identity" else None


@pytest.fixture(scope="module")
def real_sets():
    celeba_mod = pytest.importorskip("facerep_attributes.celeba", reason="the CelebA reader comes from facerep-attributes")
    CelebA, CelebAParams = celeba_mod.CelebA, celeba_mod.CelebAParams
    celeba = CelebA(CelebAParams(root=str(real_dir("celeba"))))
    ids = np.asarray(celeba.identities)
    uniq, counts = np.unique(ids, return_counts=True)
    top = uniq[np.argsort(-counts, kind="stable")[:20]]
    train = _CelebAIds(celeba, np.flatnonzero(np.isin(ids, top)))
    lfw = LFW(LFWParams(root=str(real_dir("lfw3d"))))
    keep = np.isin(lfw.folds, [0, 1])  # 200 pairs (2 x (50 same + 50 different))
    images = np.unique(lfw.pairs[keep, :2])
    # every pair of the list whose two images are among these counts, also from other folds
    inside = int(np.isin(lfw.pairs[:, :2], images).all(1).sum())
    return train, Subset(lfw, images), int(keep.sum()), inside


def _cache(task, backbone, head, ds, *, views):
    preps = [task.prepare(ds[i], train=False, rng=np.random.default_rng(i)) for i in range(len(ds))]
    images = torch.from_numpy(np.stack([p.image for p in preps]).transpose(0, 3, 1, 2).copy())
    targets = {k: torch.as_tensor(np.stack([p.target[k] for p in preps])) for k in preps[0].target}
    with torch.no_grad():
        sel = [head.select(backbone(backbone.preprocess(x))) for x in (task.test_views(images) if views else [images])]
    return sel, targets, [p.meta for p in preps]


@pytest.mark.realdata
def test_end_to_end_head_on_celeba_identities_scores_lfw_pairs(real_sets):
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams

    train, test, n_pairs, inside = real_sets
    assert len(train) == 127 and len(np.unique(train.label_array("identity"))) == 20
    assert len(test) == 333 and (n_pairs, inside) == (200, 202)
    torch.manual_seed(0)
    backbone = TimmBackbone(TimmBackboneParams(model="resnet18")).eval()
    task = FaceVerification(VerificationParams(input_size=32, embedding_dim=64, head_hidden=128))
    head = task.build_head(backbone, train, linear=False)
    (train_in,), targets, _ = _cache(task, backbone, head, train, views=False)
    assert train_in["pooled"].shape == (127, 512)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    losses = []
    head.train()
    for _ in range(40):
        loss = head.loss(head(train_in), targets).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    head.eval()
    test_in, _, metas = _cache(task, backbone, head, test, views=True)
    with torch.no_grad():
        preds = task.predict([head(v) for v in test_in], metas)
    assert len(preds) == 333 and np.linalg.norm(np.stack(preds), axis=1) == pytest.approx(np.ones(333), abs=1e-5)
    out = task.evaluate(preds, test)
    assert 0.0 <= out["acc"] <= 1.0 and 0.0 <= out["auc"] <= 1.0 and out["n_pairs"] == 202
    # the subset's pairs span 4 of the 10 folds (lines 468 and 684, of folds 3 and 9, have both images
    # inside): they are re-split into 10 balanced folds
    assert sorted(k for k in out if k.startswith("acc_fold")) == sorted(f"acc_fold{i}" for i in range(10))
    assert {"acc_std", "threshold", "tar@far=1e-3", "tar@far=1e-2"} <= set(out)


@pytest.mark.realdata
def test_core_frozen_head_protocol_runs_the_task(real_sets):
    protocols = pytest.importorskip("facerep.eval.protocols")
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams

    train, test, _, inside = real_sets
    torch.manual_seed(0)
    backbone = TimmBackbone(TimmBackboneParams(model="resnet18"))
    task = FaceVerification(VerificationParams(input_size=32, embedding_dim=32, head_hidden=64, margin="arcface"))
    proto = protocols.FrozenHead(protocols.FrozenHeadParams(epochs=3, min_steps=10, batch_size=32, device="cpu"))
    out = proto.run(backbone, task, train, test)
    assert out.history[-1]["loss"] < out.history[0]["loss"]
    assert 0.0 <= out.metrics["acc"] <= 1.0 and out.metrics["n_pairs"] == inside and len(out.predictions) == 333


def test_outcomes_give_the_fold_mean_accuracy_with_unequal_folds():
    """Per-pair outcomes reproduce ``acc`` (the mean over folds, not over pairs) and resample within folds."""
    rng = np.random.default_rng(0)
    emb = [rng.normal(size=8).astype(np.float32) for _ in range(40)]
    pairs = [[i, (i * 7 + 3) % 40, i % 2] for i in range(30)]
    folds = [0] * 6 + [1] * 10 + [2] * 14  # unequal: the pooled mean differs from the fold mean
    ds = _Pairs(40, pairs, folds=folds)
    task = _task(folds=3)
    metrics, items = task.evaluate(emb, ds), task.outcomes(emb, ds)
    assert items.metric() == pytest.approx(metrics["acc"], abs=1e-12)
    assert 0 < metrics["acc"] < 1 and items.unit == "pair" and len(items) == 30
    assert np.bincount(items.strata).tolist() == [6, 10, 14]
