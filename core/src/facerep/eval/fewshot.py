"""Few-shot subsets: seeded and nested (the 1 % subset is inside the 2 % subset, and so on).

Nesting comes from taking *prefixes* of one seeded order: a larger fraction only appends samples.

* :func:`fraction_subset`: a fraction of the training set, stratified by class when classes are
  given (each class keeps ``ceil(fraction * n_class)`` samples, at least one, so every class is
  seen even at 1 %); FRL / FaRL's ``train_data_ratio``.
* :func:`identity_subset`: recognition's K images per identity from a fraction of the identities
  (LAFS §5.9: 1/2/4/10-shot x identity fraction).

The chosen indices are written next to the results (``subsets/*.json``) so any number can be
reproduced exactly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FRACTIONS", "fraction_subset", "identity_subset"]

#: The papers' low-data grid (FRL §1.6).
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 1.0)


def _check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise ValueError(f"few-shot fraction must be in (0, 1], got {fraction}")


def fraction_subset(n: int, fraction: float, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of a seeded ``fraction`` of ``range(n)``; nested in ``fraction`` for a fixed
    seed. With ``strata`` (a class id per sample), sampling is per class."""
    _check_fraction(fraction)
    rng = np.random.default_rng(seed)
    if strata is None:
        order = rng.permutation(n)
        return np.sort(order[: max(1, math.ceil(fraction * n - 1e-9))])
    strata = np.asarray(strata)
    if len(strata) != n:
        raise ValueError(f"strata has {len(strata)} entries for {n} samples")
    chosen = []
    for c in np.unique(strata):  # sorted class order: the rng stream does not depend on file order
        members = np.flatnonzero(strata == c)
        order = rng.permutation(len(members))
        chosen.append(members[order[: max(1, math.ceil(fraction * len(members) - 1e-9))]])
    return np.sort(np.concatenate(chosen))


def identity_subset(groups: np.ndarray, id_fraction: float, shots: int | None, seed: int) -> np.ndarray:
    """Sorted indices: ``shots`` images (all when None) of each identity in a seeded
    ``id_fraction`` of the identities. Nested in both the fraction and the number of shots."""
    _check_fraction(id_fraction)
    groups = np.asarray(groups)
    ids = np.unique(groups)
    rng = np.random.default_rng(seed)
    keep_ids = ids[rng.permutation(len(ids))[: max(1, math.ceil(id_fraction * len(ids) - 1e-9))]]
    chosen = []
    for i in np.sort(keep_ids):
        members = np.flatnonzero(groups == i)
        # a per-identity stream: the images of one identity do not depend on which others are kept
        order = np.random.default_rng([seed, int(i)]).permutation(len(members))
        chosen.append(members[order[: shots or len(members)]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
