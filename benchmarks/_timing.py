"""Paired timing: facerep and lightly measured alternately in one process, medians compared.

The sides of a benchmark run interleaved (A B, then B A, ...) after their warm-up, so that a
drift in machine load (a shared CPU) hits both about equally; each side's time is the median of its
repetitions (``time.perf_counter``). Only the ratio is meant to be read across machines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Result", "interleaved", "paired", "result"]


@attrs.define
class Result:
    """One row of the results table.

    ``facerep_s`` and ``lightly_s`` are median seconds per ``unit``; ``ratio`` is
    ``lightly_s / facerep_s`` (> 1: facerep is faster).
    """

    name: str
    unit: str
    facerep_s: float
    lightly_s: float
    check: str
    note: str
    reps: int
    facerep_all_s: list[float] = attrs.field(factory=list)
    lightly_all_s: list[float] = attrs.field(factory=list)

    @property
    def ratio(self) -> float:
        return self.lightly_s / self.facerep_s

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "ratio": self.ratio}


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], *, warmup: int, reps: int, per: int = 1) -> dict[str, list[float]]:
    """Seconds per unit of work for each repetition of every callable.

    Args:
        fns: one repetition each (doing ``per`` units of work), by name.
        warmup: untimed repetitions of each first (allocator, caches, lazy init, oneDNN primitives).
        reps: timed repetitions of each; every round runs each callable once, the order rotating
            from round to round so that none is always first or last.
        per: units of work in one call; times are divided by it.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(reps):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_time(fns[name]) / per)
    return times


def paired(
    facerep: Callable[[], object], lightly: Callable[[], object], *, warmup: int, reps: int, per: int = 1
) -> tuple[list[float], list[float]]:
    """:func:`interleaved` for one facerep and one lightly callable: ``(facerep times, lightly times)``."""
    t = interleaved({"facerep": facerep, "lightly": lightly}, warmup=warmup, reps=reps, per=per)
    return t["facerep"], t["lightly"]


def result(name: str, unit: str, times: tuple[list[float], list[float]], *, check: str, note: str) -> Result:
    ta, tb = times
    return Result(
        name=name, unit=unit, facerep_s=statistics.median(ta), lightly_s=statistics.median(tb), check=check, note=note, reps=len(ta),
        facerep_all_s=ta, lightly_all_s=tb,
    )
