"""Per-item outcomes and the paired bootstrap, checked where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facerep.eval.outcomes import ItemOutcomes, load_outcomes, paired_interval, resample_counts, row_interval, save_outcomes


def test_metric_is_a_mean_or_a_mean_of_ratios_of_sums():
    rng = np.random.default_rng(0)
    correct = rng.random(50) < 0.7
    assert ItemOutcomes(correct).metric() == pytest.approx(correct.mean())
    # parsing's mean F1: per class 2 TP / (2 TP + FP + FN) over all pixels of all images, then the mean
    tp, pred, gt = rng.integers(0, 50, (3, 20, 4)).astype(float)
    tp = np.minimum(tp, np.minimum(pred, gt))
    gt[:, 3] = pred[:, 3] = tp[:, 3] = 0  # a class absent from every image is skipped, as parsing_metrics skips it
    f1 = ItemOutcomes(2 * tp, pred + gt).metric()
    want = np.mean([2 * tp[:, c].sum() / (pred[:, c] + gt[:, c]).sum() for c in range(3)])
    assert f1 == pytest.approx(want)


def test_resample_counts_keep_each_stratum_size():
    strata = np.repeat(np.arange(10), 7)
    counts = resample_counts(70, strata, 50, np.random.default_rng(1))
    assert counts.shape == (50, 70)
    for s in range(10):
        assert (counts[:, strata == s].sum(1) == 7).all()
    assert counts.std() > 0


def test_save_and_load_round_trip(tmp_path):
    o = ItemOutcomes(np.arange(6.0).reshape(3, 2), np.ones((3, 2)), np.array([0, 1, 1]), "pair")
    save_outcomes(tmp_path / "o.npz", o, test="lfw:test (3)")
    back, meta = load_outcomes(tmp_path / "o.npz")
    assert np.array_equal(back.num, o.num) and np.array_equal(back.strata, o.strata) and back.unit == "pair"
    assert meta == {"test": "lfw:test (3)"}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.npz"):
        load_outcomes(tmp_path / "bad.npz")


def test_identical_rows_are_never_marked():
    rng = np.random.default_rng(2)
    rows = [ItemOutcomes(rng.random(300) < 0.6) for _ in range(3)]
    iv = paired_interval(rows, rows, n_boot=300)
    assert iv.estimate == 0 and iv.low == 0 and iv.high == 0 and not iv.excludes_zero


def test_a_known_shift_is_marked_with_its_interval():
    """Row A = row B + 0.05 on every item, plus independent per-item noise of std 0.2: the
    difference's standard error is 0.2 / sqrt(n) under test sampling (no seed spread here)."""
    rng = np.random.default_rng(3)
    n, shift = 2000, 0.05
    base = rng.normal(size=n)
    b = [ItemOutcomes(base) for _ in range(3)]
    noise = rng.normal(0, 0.2, n)
    a = [ItemOutcomes(base + shift + noise) for _ in range(3)]
    iv = paired_interval(a, b, n_boot=1000)
    assert iv.estimate == pytest.approx(shift + noise.mean())
    assert iv.excludes_zero and iv.low < shift < iv.high
    assert iv.se_items == pytest.approx(0.2 / math.sqrt(n), rel=0.1)
    assert iv.half_width == pytest.approx(1.96 * 0.2 / math.sqrt(n), rel=0.1)
    lower = paired_interval(b, a, higher_is_better=False, n_boot=1000)  # the same claim said the other way
    assert lower.estimate == pytest.approx(iv.estimate)
    assert paired_interval(b, a, n_boot=1000).high < 0


def test_seed_spread_alone_gives_the_t_interval():
    """Items that all score the same within a seed: no test-sampling part, the t interval of 3 values."""
    per_seed = np.array([0.70, 0.74, 0.69])
    rows = [ItemOutcomes(np.full(100, v)) for v in per_seed]
    iv = row_interval(rows, n_boot=200)
    se = per_seed.std(ddof=1) / math.sqrt(3)
    assert iv.se_items == pytest.approx(0, abs=1e-12) and iv.df == pytest.approx(2)
    assert iv.half_width == pytest.approx(4.303 * se, rel=1e-3)


def _simulate(rng, n, mu_a, mu_b, sd_item, sd_row_item, sd_subset, sd_noise, seeds=3):
    """Per-item scores: a test set drawn from a population of items (an item effect shared by both
    rows and one per row, both shared by the seeds), a few-shot subset effect per row and seed, and
    per-item noise per row and seed."""
    item = rng.normal(0, sd_item, n)
    rows = []
    for mu in (mu_a, mu_b):
        row_item = rng.normal(0, sd_row_item, n)
        rows.append([ItemOutcomes(mu + item + row_item + rng.normal(0, sd_subset) + rng.normal(0, sd_noise, n)) for _ in range(seeds)])
    return rows


@pytest.mark.parametrize(("sd_row_item", "sd_subset"), [(0.0, 0.0), (0.0, 0.06), (0.5, 0.0), (0.5, 0.03)])
def test_paired_interval_covers_the_true_difference_95_percent_of_the_time(sd_row_item, sd_subset):
    """Coverage on simulated experiments, from test-set-dominated to seed-dominated: every run draws
    a new test set and new subsets; the true difference is 0.03 (400 runs: 95 % +- 2.2 % at 2 SE)."""
    rng = np.random.default_rng(4)
    sims, hits = 400, 0
    for i in range(sims):
        a, b = _simulate(rng, 200, 0.53, 0.50, 1.0, sd_row_item, sd_subset, 0.3)
        iv = paired_interval(a, b, n_boot=300, seed=i)
        hits += iv.low <= 0.03 <= iv.high
    assert 0.925 <= hits / sims <= 0.975, hits / sims


def test_row_interval_covers_accuracy_on_binary_items():
    """A row's accuracy over 3 subsets on a fresh 500-item test set each time; items' difficulty
    varies (logit-normal), the subset shifts every item's logit: coverage of the population mean."""
    rng = np.random.default_rng(5)
    sims, hits = 300, 0
    shifts = rng.normal(0, 0.15, (sims, 3))
    # the population value: items' difficulty and subsets' shift averaged out (Monte Carlo, ~3e-4)
    z, s = rng.normal(0.5, 1.5, 1_000_000), rng.normal(0, 0.15, 1_000_000)
    truth = np.mean(1 / (1 + np.exp(-(z + s))))
    for i in range(sims):
        logit = rng.normal(0.5, 1.5, 500)
        u = rng.random(500)  # the same test items and the same draw: one test set, three subsets
        rows = [ItemOutcomes((u < 1 / (1 + np.exp(-(logit + shifts[i, s])))).astype(float)) for s in range(3)]
        iv = row_interval(rows, n_boot=300, seed=i)
        hits += iv.low <= truth <= iv.high
    assert 0.90 <= hits / sims <= 0.99, hits / sims


def test_outcomes_on_different_items_refuse_to_pair():
    a = [ItemOutcomes(np.ones(10))]
    with pytest.raises(ValueError, match="different test sets"):
        paired_interval(a, [ItemOutcomes(np.ones(11))])
    with pytest.raises(ValueError, match="same subset"):
        paired_interval(a, a * 2)


def test_the_runner_stores_outcomes_only_where_they_reproduce_the_metric(tmp_path, capsys):
    from types import SimpleNamespace

    from facerep.eval.runner import _store_outcomes

    correct = np.array([1, 0, 1, 1], float)

    class Task:
        name = "toy"

        def outcomes(self, predictions, dataset):
            return ItemOutcomes(correct)

    out, record = SimpleNamespace(predictions=[0, 1, 2, 3]), {"primary": "acc", "test": "toy:test (4)", "metrics": {"acc": 0.75}}
    path = _store_outcomes(Task(), out, None, record, tmp_path / "ok.npz")
    items, meta = load_outcomes(path)
    assert items.metric() == 0.75 and meta == {"test": "toy:test (4)", "metric": "acc"}
    # outcomes that disagree with evaluate() would give intervals around another number: not stored, and said so
    wrong = {**record, "metrics": {"acc": 0.5}}
    assert _store_outcomes(Task(), out, None, wrong, tmp_path / "bad.npz") is None and not (tmp_path / "bad.npz").exists()
    assert "toy.outcomes() gives acc 0.75 where evaluate() gave 0.5; outcomes not stored for bad" in capsys.readouterr().out
    assert _store_outcomes(Task(), SimpleNamespace(predictions=[]), None, record, tmp_path / "none.npz") is None


def test_agreement_statistics_from_moment_sums_match_their_definitions_under_resampling():
    from facerep.eval.outcomes import moment_terms

    def icc(x, y):  # Shrout & Fleiss ICC(3,1), two-way ANOVA on the (n, 2) table
        t = np.stack([x, y], 1)
        n, grand = len(t), t.mean()
        bms = 2 * ((t.mean(1) - grand) ** 2).sum() / (n - 1)
        ems = ((t - t.mean(1, keepdims=True) - t.mean(0) + grand) ** 2).sum() / (n - 1)
        return (bms - ems) / (bms + ems)

    def ccc(x, y):
        return 2 * np.mean((x - x.mean()) * (y - y.mean())) / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)

    rng = np.random.default_rng(5)
    y = rng.normal(size=(60, 2))
    x = 0.8 * y + rng.normal(scale=0.6, size=(60, 2)) + 0.3
    counts = resample_counts(60, None, 3, rng)
    for stat, ref in (("icc_3_1", icc), ("ccc", ccc)):
        items = ItemOutcomes(moment_terms(x, y), statistic=stat)
        assert items.metric() == pytest.approx(np.mean([ref(x[:, j], y[:, j]) for j in range(2)]), abs=1e-12)
        # a bootstrap replicate is the statistic of the items drawn, duplicates included
        for c, got in zip(counts, items.metric_resampled(counts), strict=True):
            idx = np.repeat(np.arange(60), c.astype(int))
            assert got == pytest.approx(np.mean([ref(x[idx, j], y[idx, j]) for j in range(2)]), abs=1e-12)
    same = ItemOutcomes(moment_terms(x, y), statistic="ccc")
    iv = paired_interval([same], [same])
    assert iv.estimate == 0 and iv.low == iv.high == 0 and not iv.excludes_zero
    with pytest.raises(ValueError, match="statistic"):
        ItemOutcomes(moment_terms(x, y), statistic="pearson")
