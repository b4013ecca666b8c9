"""The linear probe against scikit-learn on real probe features: same scores, and how much faster.

    FACEREP_DATA=../shared/data python benchmarks/bench_probe.py                 # bench shapes (10 %) and 100 %
    FACEREP_DATA=../shared/data python benchmarks/bench_probe.py --fractions 0.1 --sklearn-columns 40

Features are the probe's own readouts of the five-task grid (``configs/eval/five_tasks_r18_64.yaml``:
64 px, random-init ResNet-18, ``grid4`` of layers 1-4 = 15,360 dimensions) for the three families
with a closed-form probe: CelebA's 40 attributes (train 1-8,000, test 8,001-10,000) and FER2013's 7
expressions (9,776 / 3,589) by logistic regression, AFW's landmarks by ridge regression. They are
extracted once through ``facerep eval`` and kept in ``--cache``.

AFW's 68 landmarks (237 / 231 faces, ``grid4`` too) compare facerep's closed-form ridge
(:func:`facerep.eval.linear_probe.fit_ridge`, leave-one-out choice of the weight) with scikit-learn's
``RidgeCV`` (its efficient leave-one-out, ``alpha_per_target=False``) over the same weights on the same
standardised features; their score is the mean point-to-point error of the normalised points
(lower is better), their times medians of 5.

Each classification shape (family x fraction, seed 0's nested subset) is probed twice on the same standardised
features (the whole training subset's mean and std, floored as facerep does), with the same L2 path
(strong to weak, ended after ``l2_patience`` weaker weights score below the best), the same seeded
validation split for the choice and the refit on the whole training subset:

- facerep: :func:`facerep.eval.linear_probe.fit_probe`;
- scikit-learn: ``LogisticRegression(solver="lbfgs")`` with ``C = 1 / (2 n l2)`` (multinomial; facerep
  minimises the mean loss + ``l2 ||W||^2``, scikit-learn ``C`` x the summed loss + ``||w||^2 / 2``)
  and, for the 40 attributes, one binary fit per column with ``C = 1 / (2 n 40 l2)`` (facerep's loss
  is the mean over samples and columns), each warm-started along the path (``warm_start=True``),
  ``tol`` 1e-6 and ``max_iter`` 1,000 so that both reach the optimum rather than an iteration cap.

At the 100 % attribute shape one scikit-learn path takes hours (40 binary fits of 6,400 x 15,360 per
L2), so ``--sklearn-columns k`` fits its first k columns and scales the time by 40 / k (the columns'
fits are independent); the scores are then compared on those k columns. Reports the test score of
each, their difference, the L2 each chose, and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: family -> (entry name, its index in five_tasks_r18_64.yaml)
FAMILIES = {"attributes": ("celeba-attributes", 3), "expression": ("fer2013-expression", 4), "landmarks": ("afw-68-landmarks", 1)}


def dump_features(family: str, cache: Path) -> Path:
    """``<cache>/<family>.npz`` with xtr, ytr, xte, yte (one facerep eval of the family at 100 %)."""
    path = cache / f"{family}.npz"
    if path.exists():
        return path
    from facerep.data.subset import label_array
    from facerep.eval import linear_probe
    from facerep.eval.protocols import EvalOutput
    from facerep.run import run

    def capture(self: Any, backbone: Any, task: Any, train: Any, test: Any, val: Any = None) -> Any:
        p = self.params
        (xtr, *_), _, ttr = linear_probe._probe_rows(backbone, task, train, p)
        (xte, *_), _, tte = linear_probe._probe_rows(backbone, task, test, p)
        cache.mkdir(parents=True, exist_ok=True)
        if task.probe_label is None:  # a regression target (landmarks: the normalised points)
            ytr, yte = (np.stack([t[task.probe_target] for t in ts]).reshape(len(ts), -1).astype(np.float64) for ts in (ttr, tte))
        else:
            ytr, yte = label_array(train, task.probe_label), label_array(test, task.probe_label)
        np.savez(path, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
        return EvalOutput({task.primary_metric: 0.0})

    original = linear_probe.LinearProbe.run
    linear_probe.LinearProbe.run = capture  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as d:
            name, i = FAMILIES[family]
            run(ROOT / "configs/eval/five_tasks_r18_64.yaml", evaluate_only=True, only=[name], work_dir=d,
                overrides=[f"evaluate.{i}.fractions=[1.0]", f"evaluate.{i}.seeds=[0]"])
    finally:
        linear_probe.LinearProbe.run = original  # type: ignore[method-assign]
    return path


def _subset(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    if fraction >= 1:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(len(y))[: max(1, round(fraction * len(y)))])


def sklearn_probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, p: Any, columns: int | None) -> dict[str, Any]:
    """scikit-learn's lbfgs logistic regression along facerep's path, on facerep's standardisation."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from facerep.eval.linear_probe import feature_stats

    warnings.simplefilter("ignore", ConvergenceWarning)
    multilabel = ytr.ndim == 2
    rng = np.random.default_rng(p.seed)
    perm = rng.permutation(len(xtr))
    n_val = max(1, round(p.val_fraction * len(xtr)))
    val, fit = perm[:n_val], perm[n_val:]
    cols = list(range(ytr.shape[1] if multilabel else 1))[: columns or None] if multilabel else [None]
    k = ytr.shape[1] if multilabel else 1

    def standardised(rows: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
        mean, std = feature_stats(rows, p.std_floor)
        return [((x - mean) / std).astype(np.float32) for x in (rows, *others)]

    def fit_path(x: np.ndarray, y: np.ndarray, l2s: list[float], models: dict) -> dict:
        for l2 in l2s:
            for c in cols:
                m = models.setdefault(c, LogisticRegression(solver="lbfgs", tol=1e-6, max_iter=1000, warm_start=True))
                m.set_params(C=1.0 / (2 * len(x) * k * l2))
                m.fit(x, y if c is None else y[:, c])
            yield l2, models

    def score(models: dict, x: np.ndarray, y: np.ndarray) -> float:
        if not multilabel:
            return float((models[None].predict(x) == y).mean())
        return float(np.mean([(models[c].predict(x) == y[:, c]).mean() for c in cols]))

    xa, xt = standardised(xtr, xte)  # facerep standardises once, with the whole training split's statistics
    best, best_acc, worse = None, -1.0, 0
    for l2, models in fit_path(xa[fit], ytr[fit], sorted(p.l2_grid, reverse=True), {}):
        acc = score(models, xa[val], ytr[val])
        if acc > best_acc:
            best, best_acc, worse = l2, acc, 0
        elif acc < best_acc:
            worse += 1
            if worse == p.l2_patience:  # the same early end of the path
                break
    (_, final), = fit_path(xa, ytr, [best], {})
    return {"l2": best, "val_score": best_acc, "test_score": score(final, xt, yte), "columns": columns if multilabel else None}


def _point_error(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean point-to-point distance of (N, 2 P) normalised coordinates (the NME's numerator)."""
    return float(np.linalg.norm((pred - y).reshape(len(y), -1, 2), axis=2).mean())


def sklearn_ridge(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, p: Any, lambdas: np.ndarray) -> dict[str, Any]:
    """scikit-learn's ``RidgeCV`` (efficient leave-one-out, one weight for all outputs) on facerep's
    standardisation and facerep's grid of weights (``lambdas``: the relative grid x mean s^2)."""
    from sklearn.linear_model import RidgeCV

    from facerep.eval.linear_probe import feature_stats

    mean, std = feature_stats(np.asarray(xtr, np.float64), p.std_floor)
    z, zt = ((xtr - mean) / std), ((xte - mean) / std)
    model = RidgeCV(alphas=lambdas, fit_intercept=True).fit(z, ytr)
    return {"l2": float(model.alpha_), "test_score": _point_error(model.predict(zt), yte)}


def facerep_ridge(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, p: Any) -> dict[str, Any]:
    from facerep.eval.linear_probe import RIDGE_ALPHAS, fit_ridge

    ridge = fit_ridge(xtr, ytr, std_floor=p.std_floor)
    scale = ridge.info["ridge_lambda"] / ridge.info["ridge_alpha"]  # mean s^2 of the standardised features
    return {"l2": ridge.info["ridge_lambda"], "test_score": _point_error(ridge.predict(xte), yte),
            "lambdas": [a * scale for a in RIDGE_ALPHAS]}


def facerep_probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, p: Any, columns: int | None) -> dict[str, Any]:
    from facerep.eval.linear_probe import fit_probe

    multilabel = ytr.ndim == 2
    probe = fit_probe(xtr, ytr, p, None if multilabel else int(max(ytr.max(), yte.max()) + 1))
    logits = probe.logits(xte).double().numpy()
    if multilabel:
        per = ((logits > 0) == yte).mean(0)
        return {"l2": probe.info["l2"], "val_score": probe.info["val_score"], "test_score": float(per.mean()),
                "test_score_columns": float(per[: columns or None].mean())}
    return {"l2": probe.info["l2"], "val_score": probe.info["val_score"], "test_score": float((logits.argmax(1) == yte).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.1, 1.0])
    ap.add_argument("--sklearn-columns", type=int, default=4, help="attribute columns scikit-learn fits at 100 %% (time scaled)")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facerep/bench_probe")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)

    from facerep.eval.linear_probe import LinearProbeParams

    p = LinearProbeParams(readout="grid4")
    rows = []
    for family in args.families:
        data = np.load(dump_features(family, args.cache))
        for fraction in args.fractions:
            idx = _subset(data["ytr"], fraction)
            xtr, ytr, xte, yte = data["xtr"][idx], data["ytr"][idx], data["xte"], data["yte"]
            regression = data["ytr"].dtype.kind == "f"
            columns = args.sklearn_columns if (ytr.ndim == 2 and fraction >= 1 and not regression) else None
            repeats = 5 if regression else 1  # the ridge fits take a fraction of a second: median of 5
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                ours = facerep_ridge(xtr, ytr, xte, yte, p) if regression else facerep_probe(xtr, ytr, xte, yte, p, columns)
                times.append(time.perf_counter() - t)
            ours["seconds"] = float(np.median(times))
            row: dict[str, Any] = {"family": family, "fraction": fraction, "shape": f"{len(xtr)} x {xtr.shape[1]}",
                                   "outputs": int(ytr.shape[1]) if ytr.ndim == 2 else int(ytr.max() + 1), "facerep": ours}
            lambdas = np.asarray(ours.pop("lambdas", ()))  # the ridge's grid of weights, for scikit-learn
            if not args.skip_sklearn:
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    theirs = sklearn_ridge(xtr, ytr, xte, yte, p, lambdas) if regression else sklearn_probe(xtr, ytr, xte, yte, p, columns)
                    times.append(time.perf_counter() - t)
                theirs["seconds"] = float(np.median(times)) * ((ytr.shape[1] / columns) if columns else 1.0)
                row["sklearn"] = theirs
                mine = ours.get("test_score_columns", ours["test_score"]) if columns else ours["test_score"]
                row["score_diff"] = mine - theirs["test_score"]
                row["speedup"] = theirs["seconds"] / ours["seconds"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| family | fraction | shape | outputs | facerep s | scikit-learn s | speed-up | test score facerep / sklearn | L2 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sk = r.get("sklearn", {})
        print(f"| {r['family']} | {r['fraction']:g} | {r['shape']} | {r['outputs']} | {r['facerep']['seconds']:.1f} | "
              f"{sk.get('seconds', float('nan')):.1f}{' (scaled)' if sk.get('columns') else ''} | {r.get('speedup', float('nan')):.1f}x | "
              f"{r['facerep'].get('test_score_columns', r['facerep']['test_score']):.4f} / {sk.get('test_score', float('nan')):.4f} | "
              f"{r['facerep']['l2']:g} / {sk.get('l2', float('nan'))} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
