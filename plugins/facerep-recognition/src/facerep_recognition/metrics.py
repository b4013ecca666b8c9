"""Face-verification metrics on pair scores, in numpy.

* :func:`kfold_accuracy`: the LFW protocol (Huang et al. 2007, "unrestricted" View 2 evaluation;
  spec §5.8, as in InsightFace's ``verification.py``): for each of the K folds, the threshold that
  maximises accuracy on the other K-1 folds is applied to the held-out fold; the result is the mean
  (and the population standard deviation) of the K held-out accuracies.
* :func:`tar_at_far`: true-accept rate at a false-accept rate, the threshold placed at the
  impostor-score quantile (IJB-style 1:1 verification, spec §5.8), over all pairs.
* :func:`roc_auc`: area under the ROC curve, the Mann-Whitney statistic (ties count one half).

Conventions: a pair is declared "same" when its score is **strictly greater** than the threshold;
scores are cosine similarities of L2-normalised embeddings (higher = more alike).

Hand-written rather than scikit-learn: scikit-learn is not a dependency of facerep, and none of
these needs more than a sort and a cumulative sum; the exact threshold search also removes the
grid resolution of InsightFace's ``np.arange(0, 4, 0.01)`` distance thresholds.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "balanced_folds",
    "best_threshold",
    "far_key",
    "kfold_accuracy",
    "pair_scores",
    "roc_auc",
    "tar_at_far",
    "verification_metrics",
]


def pair_scores(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``embeddings[pairs[:, 0]]`` and ``embeddings[pairs[:, 1]]`` (rows are
    L2-normalised here, so un-normalised embeddings are fine)."""
    emb = np.asarray(embeddings, np.float64)
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.maximum(norm, 1e-12)
    a, b = emb[pairs[:, 0]], emb[pairs[:, 1]]
    return (a * b).sum(1)


def balanced_folds(same: np.ndarray, k: int) -> np.ndarray:
    """K folds assigned in file order, separately within the "same" and the "different" pairs:
    the i-th of ``n`` same pairs goes to fold ``i * k // n`` (likewise for different pairs), so each
    fold holds a contiguous tenth of each block (LFW View 2's folds are 300 same + 300 different;
    View 1's 1,100 + 1,100 become 10 folds of 110 + 110)."""
    same = np.asarray(same).astype(bool)
    folds = np.zeros(len(same), np.int64)
    for block in (same, ~same):
        pos = np.flatnonzero(block)
        folds[pos] = np.arange(len(pos)) * k // max(len(pos), 1)
    return folds


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold maximising accuracy on these pairs, and that accuracy.

    Exact search over every cut of the sorted scores: the candidates are just below the smallest
    score (everything "same"), the midpoints between consecutive distinct scores, and the largest
    score (everything "different"). Ties in accuracy go to the lowest threshold (as ``np.argmax``
    over InsightFace's ascending grid).
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same).astype(bool)
    if len(scores) == 0:
        raise ValueError("best_threshold needs at least one pair")
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    n = len(s)
    # cut after position k (k = 0..n): the first k sorted pairs are "different"
    neg_below = np.concatenate([[0], np.cumsum(~y)])  # different pairs correctly rejected
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)])  # same pairs correctly accepted
    correct = neg_below + pos_above
    # a cut may only fall between distinct scores (tied scores get the same decision)
    valid = np.ones(n + 1, bool)
    valid[1:n] = s[1:] > s[:-1]
    k = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if k == 0:
        thr = float(np.nextafter(s[0], -np.inf))
    elif k == n:
        thr = float(s[-1])
    else:
        thr = float((s[k - 1] + s[k]) / 2)
    return thr, float(correct[k] / n)


def kfold_correct(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
    """LFW protocol per pair: is it right under the threshold fitted on the other folds? Returns the
    per-pair correctness and each fold's threshold. At least two folds with pairs are needed."""
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same).astype(bool)
    folds = np.asarray(folds)
    ids = np.unique(folds)
    if len(ids) < 2:
        raise ValueError(f"cross-validated accuracy needs at least 2 folds with pairs, got {len(ids)}")
    correct, thresholds = np.zeros(len(scores), bool), {}
    for f in ids:
        test = folds == f
        thr, _ = best_threshold(scores[~test], same[~test])
        correct[test] = (scores[test] > thr) == same[test]
        thresholds[int(f)] = thr
    return correct, thresholds


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, float]:
    """LFW protocol: threshold fitted on the other folds, accuracy on the held-out fold.

    Returns ``acc`` (mean over folds), ``acc_std`` (population std, ``np.std`` as InsightFace),
    ``threshold`` (mean of the per-fold thresholds) and ``acc_fold<i>``. Folds without pairs are
    ignored; at least two non-empty folds are needed.
    """
    correct, thresholds = kfold_correct(scores, same, folds)
    folds = np.asarray(folds)
    accs = {f: float(correct[folds == f].mean()) for f in thresholds}
    return {"acc": float(np.mean(list(accs.values()))), "acc_std": float(np.std(list(accs.values()))),
            "threshold": float(np.mean(list(thresholds.values()))), **{f"acc_fold{f}": a for f, a in accs.items()}}


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold) at false-accept rate ``far``.

    With ``n`` impostor scores sorted in decreasing order, the threshold is the ``k+1``-th largest,
    ``k = floor(far * n)``; accepting scores strictly above it lets at most ``k`` impostors through
    (exactly ``k`` without ties), i.e. an empirical FAR <= ``far``. When ``far * n < 1`` the
    threshold is the largest impostor score (FAR 0): report such FARs only with enough impostors.
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same).astype(bool)
    if not 0 < far < 1:
        raise ValueError(f"FAR must be in (0, 1), got {far}")
    genuine, impostor = scores[same], np.sort(scores[~same])[::-1]
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError(f"TAR@FAR needs genuine and impostor pairs, got {len(genuine)} and {len(impostor)}")
    k = int(np.floor(far * len(impostor) + 1e-9))
    thr = float(impostor[min(k, len(impostor) - 1)])
    return float((genuine > thr).mean()), thr


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve = P(genuine score > impostor score) + 0.5 P(equal) (Mann-Whitney U
    from mid-ranks)."""
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same).astype(bool)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs genuine and impostor pairs, got {n_pos} and {n_neg}")
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    ranks = np.empty(len(s), np.float64)
    # mid-ranks (1-based) over runs of equal scores
    starts = np.flatnonzero(np.concatenate([[True], s[1:] > s[:-1]]))
    ends = np.concatenate([starts[1:], [len(s)]])
    for a, b in zip(starts, ends, strict=True):
        ranks[a:b] = (a + 1 + b) / 2
    rank_of = np.empty(len(s), np.float64)
    rank_of[order] = ranks
    u = rank_of[same].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def far_key(far: float) -> str:
    """``1e-3`` -> ``"tar@far=1e-3"`` (result keys)."""
    mant, exp = f"{far:.0e}".split("e")
    return f"tar@far={mant}e{int(exp)}" if float(f"{far:.0e}") == far else f"tar@far={far:g}"


def verification_metrics(embeddings: np.ndarray, pairs: np.ndarray, folds: np.ndarray,
                         fars: tuple[float, ...] = (1e-3, 1e-2)) -> dict[str, float]:
    """Everything at once: ``pairs`` is ``(P, 3)`` (index_a, index_b, same)."""
    pairs = np.asarray(pairs, np.int64)
    scores = pair_scores(embeddings, pairs)
    same = pairs[:, 2].astype(bool)
    out = kfold_accuracy(scores, same, folds)
    for far in fars:
        tar, thr = tar_at_far(scores, same, far)
        out[far_key(far)] = tar
        out[far_key(far).replace("tar@", "threshold@")] = thr
    out["auc"] = roc_auc(scores, same)
    out["n_pairs"] = float(len(pairs))
    return out
