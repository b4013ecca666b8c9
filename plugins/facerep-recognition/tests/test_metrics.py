"""Verification metrics against hand-computed cases, and their behaviour at the extremes."""

from __future__ import annotations

import numpy as np
import pytest

from facerep_recognition.metrics import (
    balanced_folds,
    best_threshold,
    far_key,
    kfold_accuracy,
    pair_scores,
    roc_auc,
    tar_at_far,
    verification_metrics,
)


def test_best_threshold_exact_search_and_ties():
    # sorted: 0.1(-) 0.4(+) 0.5(-) 0.9(+); cuts: all "same" 2/4, >0.25: 3/4, >0.45: 2/4, >0.7: 3/4, none 2/4
    thr, acc = best_threshold(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0]))
    assert (thr, acc) == (pytest.approx(0.25), 0.75)  # first of the two best cuts (lowest threshold)
    # tied scores take one decision: 0.5(+) 0.5(-) can't be split -> best is 0.3 | 0.5, 0.5 | 0.8 -> 3/4
    thr, acc = best_threshold(np.array([0.3, 0.5, 0.5, 0.8]), np.array([0, 1, 0, 1]))
    assert (thr, acc) == (pytest.approx(0.4), 0.75)
    # all positives: everything accepted, threshold just below the minimum
    thr, acc = best_threshold(np.array([0.2, 0.6]), np.array([1, 1]))
    assert acc == 1.0 and thr < 0.2 and thr > 0.2 - 1e-9
    # all negatives: nothing accepted at the maximum (strict >)
    assert best_threshold(np.array([0.2, 0.6]), np.array([0, 0])) == (0.6, 1.0)


def test_kfold_accuracy_hand_case_with_four_pairs():
    # pairs: (0.9, same, fold 0), (0.4, same, fold 1), (0.2, diff, fold 0), (0.1, diff, fold 1)
    # fold 0 held out: threshold from fold 1 {0.4+, 0.1-} = 0.25 -> 0.9 same (ok), 0.2 diff (ok): 1.0
    # fold 1 held out: threshold from fold 0 {0.9+, 0.2-} = 0.55 -> 0.4 diff (wrong), 0.1 diff (ok): 0.5
    out = kfold_accuracy(np.array([0.9, 0.4, 0.2, 0.1]), np.array([1, 1, 0, 0]), np.array([0, 1, 0, 1]))
    assert out["acc_fold0"] == 1.0 and out["acc_fold1"] == 0.5
    assert out["acc"] == pytest.approx(0.75) and out["acc_std"] == pytest.approx(0.25)
    assert out["threshold"] == pytest.approx((0.25 + 0.55) / 2)


def test_kfold_needs_two_folds():
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_accuracy(np.array([0.1, 0.2]), np.array([1, 0]), np.array([3, 3]))


def test_tar_at_far_and_auc_hand_case():
    scores = np.array([0.9, 0.4, 0.5, 0.1])
    same = np.array([1, 1, 0, 0])
    # impostors sorted down: 0.5, 0.1. FAR 0.5 -> k = 1 -> threshold 0.1 -> both genuine accepted
    assert tar_at_far(scores, same, 0.5) == (1.0, 0.1)
    # FAR 0.1 -> k = 0 -> threshold 0.5 (largest impostor) -> only 0.9 accepted
    assert tar_at_far(scores, same, 0.1) == (0.5, 0.5)
    # genuine > impostor for (0.9, 0.5), (0.9, 0.1), (0.4, 0.1), not (0.4, 0.5): 3/4
    assert roc_auc(scores, same) == 0.75
    # a tie counts one half: genuine {0.5}, impostors {0.5, 0.2} -> (0.5 + 1) / 2
    assert roc_auc(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0])) == 0.75


def test_tar_at_far_with_many_impostors_counts_exactly():
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    genuine = np.array([0.9905, 0.9895, 0.5])
    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(3), np.zeros(1000)])
    # FAR 1e-2 -> k = 10 -> threshold = 11th largest impostor = 0.989 -> 0.9905 and 0.9895 accepted
    tar, thr = tar_at_far(scores, same, 1e-2)
    assert thr == pytest.approx(0.989) and tar == pytest.approx(2 / 3)
    assert (impostor > thr).sum() == 10


def test_balanced_folds_split_each_block_in_order():
    same = np.array([1] * 5 + [0] * 5 + [1] * 5 + [0] * 5)
    folds = balanced_folds(same, 5)
    assert folds.tolist() == [0, 0, 1, 1, 2, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 2, 3, 3, 4, 4]
    assert all(same[folds == f].sum() == 2 and (folds == f).sum() == 4 for f in range(5))


def test_perfectly_separable_embeddings_score_100_percent():
    rng = np.random.default_rng(0)
    n_people = 300
    centres = rng.normal(size=(n_people, 64))
    emb = np.repeat(centres, 2, axis=0) + 0.01 * rng.normal(size=(2 * n_people, 64))  # images 2i, 2i+1 of person i
    same_pairs = np.stack([np.arange(0, 600, 2), np.arange(1, 600, 2), np.ones(300, int)], 1)
    diff_pairs = np.stack([np.arange(0, 600, 2), (np.arange(0, 600, 2) + 2) % 600, np.zeros(300, int)], 1)
    pairs = np.concatenate([same_pairs, diff_pairs])
    out = verification_metrics(emb, pairs, balanced_folds(pairs[:, 2], 10), fars=(1e-2,))
    assert out["acc"] == 1.0 and out["acc_std"] == 0.0 and out["auc"] == 1.0 and out["tar@far=1e-2"] == 1.0
    assert out["n_pairs"] == 600 and len([k for k in out if k.startswith("acc_fold")]) == 10


def test_random_embeddings_score_about_50_percent_on_6000_pairs():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(12000, 32))
    same = np.repeat([1, 0], 3000)
    pairs = np.stack([np.arange(0, 12000, 2), np.arange(1, 12000, 2), same], 1)
    out = verification_metrics(emb, pairs, balanced_folds(same, 10))
    assert abs(out["acc"] - 0.5) < 0.03 and abs(out["auc"] - 0.5) < 0.03
    assert out["tar@far=1e-2"] < 0.05  # about the FAR itself for indistinguishable scores


def test_pair_scores_are_cosines_of_unnormalised_embeddings():
    emb = np.array([[3.0, 4.0], [6.0, 8.0], [-4.0, 3.0]])
    assert pair_scores(emb, np.array([[0, 1, 1], [0, 2, 0]])) == pytest.approx([1.0, 0.0])


def test_far_keys():
    assert (far_key(1e-3), far_key(1e-2), far_key(0.05), far_key(2.5e-4)) == (
        "tar@far=1e-3", "tar@far=1e-2", "tar@far=5e-2", "tar@far=0.00025")
