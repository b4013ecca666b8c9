"""Per-item outcomes of an evaluation, and 95 % intervals that count both sources of chance.

Every primary metric facerep reports is a mean over columns of ratios of sums over test items::

    metric = mean_c ( sum_i num[i, c] / sum_i den[i, c] )          (columns with sum den = 0 skipped)

- a mean of per-item values (accuracy, NME, a pair's correctness): one column, ``den = 1``;
- a mean over attributes of per-attribute accuracy: one column per attribute, ``den = 1``;
- parsing's mean F1 over classes: per image and class ``num = 2 TP``, ``den = 2 TP + FP + FN``
  (predicted + true pixels), summed over images before the ratio, as the metric is defined.

Agreement metrics between a prediction ``x`` and a target ``y`` per item (AU intensity's ICC(3,1),
valence / arousal's CCC) are functions of sums over items too, of their moments: with
``statistic="icc_3_1"`` or ``"ccc"``, ``num`` holds per item and target the six terms
``1, x, y, x^2, y^2, x y`` (:func:`moment_terms`), and the metric is the statistic of their sums,
averaged over targets.

A task's ``outcomes(predictions, dataset)`` returns these arrays (:class:`ItemOutcomes`); the eval
runner stores them beside each record (``outcomes/*.npz``), so that two runs on the same test items
can be compared item by item — here, or by the user with numpy.

Two sources of chance move a row's number: which few-shot subset was drawn (the seeds) and which
test items were drawn (the finite test set). :func:`row_interval` and :func:`paired_interval` count
both, for the mean over ``S`` seeds of a row's metric (of the paired difference of two rows), ``D``:

- test items: a bootstrap resamples items (within ``strata``: LFW's folds) with replacement, the
  same resample for every seed and for both rows of a paired comparison;
- subsets: the per-seed values ``d_s`` differ by their subset and because each seed's predictions
  meet the test items differently; their spread gives ``se_seeds^2 = var_s(d_s) / S`` (ddof 1),
  which has only ``S - 1`` degrees of freedom. Three seeds cannot be bootstrapped (three values have
  ten resamples whose spread underestimates the variance by a third): this part enters with t.

What the seeds' spread cannot see is the test-sampling error they share: the bootstrap variance of
``D`` less the part that differs between seeds (already in ``se_seeds``), estimated from the same
replicates, ``se_items^2 = max(0, var_boot(D*) - mean_s var_boot(d*_s - D*) / (S - 1))``. One seed:
``se_items^2 = var_boot(D*)`` and ``se_seeds = 0`` (the subset's own variance cannot be seen).

The interval is ``D ± t_nu * sqrt(se_items^2 + se_seeds^2)`` with Welch-Satterthwaite's
``nu = (se_items^2 + se_seeds^2)^2 / (se_seeds^4 / (S - 1))`` (the shared item part has, in effect,
infinite degrees of freedom): with 3 seeds and no shared test-sampling error this is the t interval
of the seeds (t = 4.30), with a dominant shared part it tends to the normal one (1.96). Coverage is
checked on simulated experiments in ``core/tests/test_outcomes.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

__all__ = [
    "Interval", "ItemOutcomes", "load_outcomes", "moment_terms", "paired_interval", "resample_counts", "row_interval", "save_outcomes",
]

#: Bootstrap replicates of the test items; the Monte-Carlo error of a 2,000-replicate standard error is ~1.6 %.
N_BOOT = 2000


def _as_2d(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"ItemOutcomes.{name}: expected (items,) or (items, columns), got shape {a.shape}")
    return a


@attrs.frozen
class ItemOutcomes:
    """Per-item terms of a metric (see the module docstring).

    Attributes:
        num, den: ``(items, columns)``; ``den`` defaults to ones (a mean of ``num``).
        strata: ``(items,)`` ints; the bootstrap resamples within each stratum (LFW's folds), or None.
        unit: what one item is ("pair", "image", "face"), for captions.
        empty: a column's value when its ``den`` sums to 0 (an AU never predicted nor present
            scores F1 0 in ``au_f1``); None: the column is left out of the mean (parsing's absent classes).
        statistic: ``"ratio"`` (the mean of ratios above), or ``"icc_3_1"`` / ``"ccc"``: ``num``
            holds :func:`moment_terms`, six columns per target, and ``den`` is unused.
    """

    num: np.ndarray = attrs.field(converter=lambda a: _as_2d(a, "num"))
    den: np.ndarray | None = attrs.field(default=None)
    strata: np.ndarray | None = attrs.field(default=None)
    unit: str = "item"
    empty: float | None = None
    statistic: str = attrs.field(default="ratio", validator=attrs.validators.in_(("ratio", "icc_3_1", "ccc")))

    def __attrs_post_init__(self) -> None:
        den = np.ones_like(self.num) if self.den is None else _as_2d(self.den, "den")
        if den.shape != self.num.shape:
            raise ValueError(f"ItemOutcomes: num {self.num.shape} and den {den.shape} differ")
        object.__setattr__(self, "den", den)
        if self.strata is not None:
            strata = np.asarray(self.strata).astype(np.int64).ravel()
            if len(strata) != len(self.num):
                raise ValueError(f"ItemOutcomes: {len(strata)} strata for {len(self.num)} items")
            object.__setattr__(self, "strata", strata)

    def __len__(self) -> int:
        return len(self.num)

    def metric(self) -> float:
        """The metric on the test set as it is."""
        return float(self.metric_resampled(np.ones((1, len(self)), np.float64))[0])

    def metric_resampled(self, counts: np.ndarray) -> np.ndarray:
        """The metric under each row of ``counts`` ``(B, items)``: how often each item was drawn."""
        if self.statistic != "ratio":
            sums = (counts @ self.num).reshape(len(counts), -1, 6)  # (B, targets, moments)
            return _AGREEMENT[self.statistic](*np.moveaxis(sums, -1, 0)).mean(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            den = counts @ self.den
            ratio = np.where(den > 0, (counts @ self.num) / np.where(den > 0, den, 1.0), np.nan if self.empty is None else self.empty)
        keep = np.isfinite(ratio)
        return np.where(keep.any(1), np.where(keep, ratio, 0.0).sum(1) / np.maximum(keep.sum(1), 1), np.nan)


def moment_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(items, targets * 6)``: per item and target ``1, x, y, x^2, y^2, x y`` (``x`` the prediction,
    ``y`` the target, both ``(items,)`` or ``(items, targets)``), the terms whose sums give ICC and CCC."""
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1).reshape(len(x), -1)


def _icc_3_1(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray) -> np.ndarray:
    """ICC(3,1) of two ratings (Shrout & Fleiss 1979) from moment sums: (BMS - EMS) / (BMS + EMS)."""
    grand = (sx + sy) / (2 * n)
    ss_rows = (sxx + 2 * sxy + syy) / 2 - 2 * n * grand**2  # 2 sum_i (mean_i - grand)^2
    ss_cols = n * ((sx / n - grand) ** 2 + (sy / n - grand) ** 2)
    ss_err = sxx + syy - 2 * n * grand**2 - ss_rows - ss_cols
    bms, ems = ss_rows / (n - 1), ss_err / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bms + ems > 0, (bms - ems) / np.where(bms + ems > 0, bms + ems, 1.0), 0.0)


def _ccc(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray) -> np.ndarray:
    """Lin's concordance correlation 2 cov / (var_x + var_y + (mean_x - mean_y)^2), population moments."""
    mx, my = sx / n, sy / n
    return 2 * (sxy / n - mx * my) / (sxx / n - mx**2 + syy / n - my**2 + (mx - my) ** 2 + 1e-12)


_AGREEMENT = {"icc_3_1": _icc_3_1, "ccc": _ccc}


def save_outcomes(path: str | Path, outcomes: ItemOutcomes, **meta: str) -> None:
    """``path`` (.npz): the arrays and string metadata (e.g. the test set's name); no pickles."""
    arrays: dict[str, np.ndarray] = {"num": outcomes.num, "den": outcomes.den, "unit": np.array(outcomes.unit),
                                     "statistic": np.array(outcomes.statistic)}
    if outcomes.empty is not None:
        arrays["empty"] = np.array(outcomes.empty)
    if outcomes.strata is not None:
        arrays["strata"] = outcomes.strata
    arrays.update({f"meta_{k}": np.array(str(v)) for k, v in meta.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_outcomes(path: str | Path) -> tuple[ItemOutcomes, dict[str, str]]:
    """What :func:`save_outcomes` wrote: ``(outcomes, meta)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = ItemOutcomes(z["num"], z["den"], z["strata"] if "strata" in z else None, str(z["unit"]),
                               float(z["empty"]) if "empty" in z else None, str(z["statistic"]) if "statistic" in z else "ratio")
            meta = {k[5:]: str(z[k]) for k in z.files if k.startswith("meta_")}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a facerep outcomes file ({e})") from e
    return out, meta


def resample_counts(n: int, strata: np.ndarray | None, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` draw counts: each stratum's items drawn with replacement, its size kept."""
    counts = np.zeros((n_boot, n), np.float64)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for idx in groups:
        counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n_boot)
    return counts


@attrs.frozen
class Interval:
    """``estimate`` and its ``level`` interval ``[low, high]`` (see the module docstring)."""

    estimate: float
    low: float
    high: float
    se_items: float
    se_seeds: float
    df: float
    seeds: int
    items: int
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_json(self) -> dict[str, float | int]:
        return {**attrs.asdict(self), "excludes_zero": self.excludes_zero}


def _combine(per_seed: np.ndarray, reps: np.ndarray, n_items: int, level: float) -> Interval:
    """``per_seed`` (S,) values on the test set; ``reps`` (B, S) the same under item resamples."""
    from scipy.stats import t as student_t

    s = len(per_seed)
    estimate = float(per_seed.mean())
    boot = float(np.nanvar(reps.mean(1), ddof=1)) if len(reps) > 1 else 0.0
    if s > 1:
        # E var_boot(d*_s - D*) = (1 - 1/S) v for seed-specific test-sampling variance v; v / S of it is in D's
        between = float(np.nanmean(np.nanvar(reps - reps.mean(1, keepdims=True), axis=0, ddof=1))) if len(reps) > 1 else 0.0
        se_items = math.sqrt(max(0.0, boot - between / (s - 1)))
        se_seeds = float(per_seed.std(ddof=1)) / math.sqrt(s)
    else:
        se_items, se_seeds = math.sqrt(boot), 0.0
    var = se_items**2 + se_seeds**2
    df = var**2 / (se_seeds**4 / (s - 1)) if se_seeds > 0 else math.inf
    q = float(student_t.ppf((1 + level) / 2, df)) if math.isfinite(df) else float(student_t.ppf((1 + level) / 2, 1e12))
    half = q * math.sqrt(var)
    return Interval(estimate, estimate - half, estimate + half, se_items, se_seeds, df, s, n_items, level)


def _check_same_items(outs: Sequence[ItemOutcomes]) -> None:
    first = outs[0]
    for o in outs[1:]:
        if o.num.shape[0] != first.num.shape[0]:
            raise ValueError(f"outcomes on different test sets: {first.num.shape[0]} and {o.num.shape[0]} items")
        if (o.strata is None) != (first.strata is None) or (o.strata is not None and not np.array_equal(o.strata, first.strata)):
            raise ValueError("outcomes with different strata (folds): not the same test items")


def _replicates(first: ItemOutcomes, stat: Callable[[np.ndarray], np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """``stat`` (B, S) of ``n_boot`` item resamples, drawn in chunks (a (2000, 20000) count matrix would be 320 MB)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // max(len(first), 1)))
    return np.concatenate([stat(resample_counts(len(first), first.strata, min(chunk, n_boot - i), rng))
                           for i in range(0, n_boot, chunk)])


def row_interval(seeds: Sequence[ItemOutcomes], *, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """A row's metric (mean over seeds) with its interval; ``seeds``: one outcome set per few-shot subset."""
    _check_same_items(seeds)
    per_seed = np.array([o.metric() for o in seeds])
    reps = _replicates(seeds[0], lambda c: np.stack([o.metric_resampled(c) for o in seeds], axis=1), n_boot, seed)
    return _combine(per_seed, reps, len(seeds[0]), level)


def paired_interval(a: Sequence[ItemOutcomes], b: Sequence[ItemOutcomes], *, higher_is_better: bool = True, level: float = 0.95,
                    n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """How much row ``a`` is better than row ``b`` (positive: better), paired by seed and by test item.

    ``a[s]`` and ``b[s]`` must share the few-shot subset ``s`` and the test items; every bootstrap
    replicate resamples the items once for all seeds of both rows."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_interval: {len(a)} and {len(b)} seeds; pair each subset of one row with the same subset of the other")
    _check_same_items([*a, *b])
    sign = 1.0 if higher_is_better else -1.0
    per_seed = sign * np.array([x.metric() - y.metric() for x, y in zip(a, b, strict=True)])

    def stat(counts: np.ndarray) -> np.ndarray:
        return sign * np.stack([x.metric_resampled(counts) - y.metric_resampled(counts) for x, y in zip(a, b, strict=True)], axis=1)

    reps = _replicates(a[0], stat, n_boot, seed)
    return _combine(per_seed, reps, len(a[0]), level)
