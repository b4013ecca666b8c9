"""Face verification as a facerep task (spec §5.7-5.9, §7.1 T5).

Training learns identities of the ``train`` set (e.g. CelebA identities, K shots per identity)
with an embedding layer and a margin-softmax classifier (CosFace by default, ArcFace optional).
Testing never uses the classifier: each test image gives an embedding (flip-fused, L2-normalised),
pairs are scored by cosine similarity, and the pair list of the test set (``recognition.lfw``)
is scored with the LFW 10-fold protocol plus TAR@FAR and ROC AUC.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerep.data.geometry import FIVE_POINT_INDICES, five_points, similarity_matrix, template, warp
from facerep.data.subset import label_array
from facerep.errors import ConfigError
from facerep.eval.outcomes import ItemOutcomes
from facerep.eval.task import HeadBase, TaskBase, resize_prepared
from facerep.protocols import Backbone, FaceDataset
from facerep.types import LossOutput, Prepared, Sample
from facerep_recognition.margin import MarginClassifier, margin_logits
from facerep_recognition.metrics import balanced_folds, best_threshold, kfold_correct, pair_scores, verification_metrics

__all__ = ["FaceVerification", "VerificationHead", "VerificationParams"]

#: Default margins: CosFace 0.4 (LAFS / Part fViT, spec §5.4; the CosFace paper's 0.35 is a param
#: away), ArcFace 0.5 (Deng et al. 2019).
DEFAULT_MARGIN = {"cosface": 0.4, "arcface": 0.5}


def _at_least(low: float, *, strict: bool = False):
    def check(instance: object, attribute: attrs.Attribute, value: float | None) -> None:
        if value is not None and (value <= low if strict else value < low):
            raise ValueError(f"{attribute.name} must be {'>' if strict else '>='} {low}, got {value}")

    return check


def _fars(instance: object, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    bad = [f for f in value if not 0 < f < 1]
    if bad:
        raise ValueError(f"fars must lie in (0, 1), got {bad}")


@attrs.frozen
class VerificationParams:
    """Attributes:
    input_size: side of the square network input (InsightFace crops are 112).
    embedding_dim: size of the learnt embedding.
    margin: ``cosface`` (Wang et al. 2018) or ``arcface`` (Deng et al. 2019).
    s: logit scale; m: margin (None: 0.4 for CosFace, 0.5 for ArcFace); easy_margin: ArcFace's
        margin only where cos > 0 (else the ``theta + m > pi`` fallback).
    head_hidden: hidden width of the (non-linear) embedding MLP Linear-BN-ReLU-Linear-BN; None or 0:
        Linear-BN. The linear mode (``build_head(linear=True)``) is a single Linear.
    train_head: False = "zero-shot": the embedding is the backbone's pooled vector as it is (the
        margin classifier is still built on it so protocols run, but it does not change the
        embedding; under fine-tuning the backbone itself learns through it).
    flip_test: fuse each test image's embedding with its mirror's (sum, then L2 norm; spec §5.8).
    train_flip: random horizontal flip when preparing training images (fine-tuning).
    align: ``none`` resizes the whole image (LFW3D and CelebA's aligned crops are aligned
        already); ``center`` takes the centred square first (no aspect distortion of CelebA's
        178x218 crops); ``arcface`` warps with the 5-point similarity to the ArcFace template
        when the sample has landmarks of a known scheme (5/68/98/106 points), and resizes others.
    fars: false-accept rates of the TAR@FAR metrics.
    folds: cross-validation folds; the dataset's own folds are used when there are this many,
        otherwise pairs are re-assigned to balanced folds in file order.
    """

    input_size: int = attrs.field(default=112, validator=_at_least(1))
    embedding_dim: int = attrs.field(default=512, validator=_at_least(1))
    margin: Literal["cosface", "arcface"] = "cosface"
    s: float = attrs.field(default=64.0, validator=_at_least(0, strict=True))
    m: float | None = attrs.field(default=None, validator=_at_least(0))
    easy_margin: bool = False
    head_hidden: int | None = attrs.field(default=512, validator=_at_least(0))
    train_head: bool = True
    flip_test: bool = True
    train_flip: bool = True
    align: Literal["none", "center", "arcface"] = "none"
    fars: tuple[float, ...] = attrs.field(default=(1e-3, 1e-2), validator=_fars)
    folds: int = attrs.field(default=10, validator=_at_least(2))

    @classmethod
    def tiny(cls) -> VerificationParams:
        return cls(input_size=32, embedding_dim=16, head_hidden=32)

    @property
    def margin_value(self) -> float:
        return DEFAULT_MARGIN[self.margin] if self.m is None else self.m


class VerificationHead(HeadBase):
    """Embedding layer on the pooled vector + margin classifier over the training identities.

    ``forward`` returns the (un-normalised) embedding; ``loss`` maps the raw identity labels to
    0..C-1 through ``classes`` (the sorted identities of the training set, which need not be
    contiguous: a few-shot subset keeps a fraction of them) and applies the margin softmax.
    """

    def __init__(self, in_dim: int, classes: np.ndarray, params: VerificationParams, *, linear: bool) -> None:
        super().__init__()
        p = params
        if not p.train_head:
            self.embed: nn.Module = nn.Identity()
            out_dim = in_dim
        elif linear:
            self.embed = nn.Linear(in_dim, p.embedding_dim)
            out_dim = p.embedding_dim
        elif p.head_hidden:
            self.embed = nn.Sequential(nn.Linear(in_dim, p.head_hidden), nn.BatchNorm1d(p.head_hidden), nn.ReLU(inplace=True),
                                       nn.Linear(p.head_hidden, p.embedding_dim), nn.BatchNorm1d(p.embedding_dim))
            out_dim = p.embedding_dim
        else:  # InsightFace's embedding: fc + BatchNorm ("features")
            self.embed = nn.Sequential(nn.Linear(in_dim, p.embedding_dim), nn.BatchNorm1d(p.embedding_dim))
            out_dim = p.embedding_dim
        self.out_dim = out_dim
        self.register_buffer("classes", torch.as_tensor(np.asarray(classes, np.int64)))
        self.classifier = MarginClassifier(out_dim, len(classes), kind=p.margin, s=p.s, m=p.margin_value, easy_margin=p.easy_margin)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed(inputs["pooled"].float())

    def class_index(self, identity: torch.Tensor) -> torch.Tensor:
        """Raw identity labels -> 0..C-1 (ValueError naming an identity the head was not built for)."""
        y = identity.reshape(-1).long().to(self.classes.device)
        idx = torch.searchsorted(self.classes, y).clamp(max=len(self.classes) - 1)
        bad = self.classes[idx] != y
        if bool(bad.any()):
            raise ValueError(f"identity {int(y[bad][0])} is not one of the {len(self.classes)} training identities "
                             f"(-1 = a sample without an identity label)")
        return idx

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        idx = self.class_index(targets["identity"])
        c = self.classifier
        cos = c.cosine(output)  # once: the margin logits and the accuracy both read it
        loss = F.cross_entropy(margin_logits(c.kind, cos, idx, c.s, c.m, easy_margin=c.easy_margin), idx)
        acc = (cos.detach().argmax(1) == idx).float().mean()
        return LossOutput(loss, {"loss": float(loss.detach()), "train_acc": float(acc)})


def _identities(dataset: FaceDataset) -> np.ndarray:
    ids = label_array(dataset, "identity")
    if ids is None:
        raise ConfigError(f"dataset {dataset.info.name}: face verification trains on identities, "
                          "but not every sample has an identity label")
    return np.asarray(ids, np.int64).reshape(-1)


class FaceVerification(TaskBase):
    """Identity training with a margin softmax; verification on the test set's pairs."""

    name = "verification"
    label = "identity"
    primary_metric = "acc"
    higher_is_better = True
    probe_label = None

    def __init__(self, params: VerificationParams | None = None) -> None:
        self.params = params or VerificationParams()
        self.input_size = self.params.input_size

    # -- data -------------------------------------------------------------------------------
    def _geometry(self, sample: Sample) -> Prepared:
        p, size = self.params, self.params.input_size
        h, w = sample.image.shape[:2]
        lm = sample.landmarks
        if p.align == "arcface" and lm is not None and str(len(lm)) in FIVE_POINT_INDICES:
            # 5-point similarity onto the ArcFace template (InsightFace's norm_crop: black border)
            m = similarity_matrix(five_points(lm), template("arcface", size))
            return Prepared(image=warp(sample.image, m, size), meta={"matrix": m, "size": (h, w), "path": sample.meta.get("path")})
        if p.align == "center":
            # integer centred square crop, then the area-averaged resize of resize_prepared
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            crop = Sample(image=np.ascontiguousarray(sample.image[y0 : y0 + side, x0 : x0 + side]), meta=sample.meta)
            prep = resize_prepared(crop, size)
            prep.meta["matrix"] = prep.meta["matrix"] @ np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
            prep.meta["size"] = (h, w)
            return prep
        return resize_prepared(sample, size)

    def prepare(self, sample: Sample, *, train: bool, rng: np.random.Generator) -> Prepared:
        prep = self._geometry(sample)
        if train and self.params.train_flip and rng.random() < 0.5:
            size = self.params.input_size
            prep.image = np.ascontiguousarray(prep.image[:, ::-1])
            flip = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            prep.meta["matrix"] = (flip @ np.vstack([prep.meta["matrix"], [0.0, 0.0, 1.0]]))[:2]
        identity = -1 if sample.identity is None else int(sample.identity)
        prep.target = {"identity": np.asarray(identity, np.int64)}
        return prep

    def groups(self, dataset: FaceDataset) -> np.ndarray:
        """Identities, for K-shot-per-identity subsets (spec §5.9)."""
        return _identities(dataset)

    # -- model ------------------------------------------------------------------------------
    def build_head(self, backbone: Backbone, train: FaceDataset, *, linear: bool) -> VerificationHead:
        classes = np.unique(_identities(train))
        if len(classes) < 2:
            raise ConfigError(f"dataset {train.info.name}: face verification needs at least 2 identities, got {len(classes)}")
        return VerificationHead(int(backbone.embed_dim), classes, self.params, linear=linear)

    def test_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [images, images.flip(-1)] if self.params.flip_test else [images]

    def predict(self, outputs: list[Any], metas: list[dict]) -> list[np.ndarray]:
        """Flip fusion (spec §5.8): the views' embeddings are summed, then L2-normalised."""
        fused = torch.stack([o.float() for o in outputs]).sum(0)
        fused = F.normalize(fused, dim=1)
        return [row.numpy().astype(np.float32) for row in fused]

    # -- scoring ----------------------------------------------------------------------------
    def _pairs(self, dataset: FaceDataset, attr: str, folds_attr: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The dataset's pairs (and folds) re-indexed into ``dataset`` order; for a Subset of a
        pair dataset, only pairs with both images inside the subset."""
        pairs = getattr(dataset, attr, None)
        if pairs is None:
            return None
        pairs = np.asarray(pairs, np.int64).reshape(-1, 3)
        folds = getattr(dataset, folds_attr, None)
        folds = None if folds is None else np.asarray(folds)
        indices = getattr(dataset, "indices", None)
        if indices is not None:
            pos = np.full(int(max(pairs[:, :2].max(initial=-1), np.max(indices, initial=-1))) + 1, -1, np.int64)
            pos[np.asarray(indices, np.int64)] = np.arange(len(indices))
            a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
            keep = (a >= 0) & (b >= 0)
            pairs = np.stack([a[keep], b[keep], pairs[keep, 2]], 1)
            folds = None if folds is None else folds[keep]
        return pairs, folds

    def _scored(self, predictions: list[Any], dataset: FaceDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embeddings, pairs, folds) of the scored pair list."""
        got = self._pairs(dataset, "pairs", "folds")
        if got is None:
            raise ConfigError(f"dataset {dataset.info.name} has no verification pairs (`pairs`); "
                              "score face verification on a pair dataset such as recognition.lfw")
        if len(predictions) != len(dataset):
            raise ValueError(f"{len(predictions)} predictions for {len(dataset)} images of {dataset.info.name}")
        pairs, folds = got
        if len(pairs) == 0:
            raise ValueError(f"dataset {dataset.info.name}: no pair has both images in this dataset")
        emb = np.stack([np.asarray(e, np.float32) for e in predictions])
        if folds is None or len(np.unique(folds)) != self.params.folds:
            folds = balanced_folds(pairs[:, 2].astype(bool), self.params.folds)
        return emb, pairs, folds

    def evaluate(self, predictions: list[Any], dataset: FaceDataset) -> dict[str, float]:
        p = self.params
        emb, pairs, folds = self._scored(predictions, dataset)
        out = verification_metrics(emb, pairs, folds, p.fars)
        fit = self._pairs(dataset, "fit_pairs", "fit_folds")
        if fit is not None and len(fit[0]):
            # threshold fitted on a second list (e.g. pairsDevTrain), applied to the scored pairs
            thr, _ = best_threshold(pair_scores(emb, fit[0]), fit[0][:, 2].astype(bool))
            out["acc_fit"] = float(((pair_scores(emb, pairs) > thr) == pairs[:, 2].astype(bool)).mean())
            out["threshold_fit"] = thr
        return out

    def outcomes(self, predictions: list[Any], dataset: FaceDataset) -> ItemOutcomes:
        """Per pair: right or wrong under its fold's threshold (fitted on the other folds), weighted
        so that the mean over pairs is ``acc``, the mean over folds; resampled within folds."""
        emb, pairs, folds = self._scored(predictions, dataset)
        correct, _ = kfold_correct(pair_scores(emb, pairs), pairs[:, 2].astype(bool), folds)
        ids, inverse, sizes = np.unique(folds, return_inverse=True, return_counts=True)
        weight = len(folds) / (len(ids) * sizes[inverse])
        return ItemOutcomes(correct * weight, weight, strata=inverse, unit="pair")
