"""Paired timing: facerep and lightly measured alternately in one process, medians compared.

The two sides of a benchmark run interleaved (A B, then B A, ...) after their warm-up, so that a
drift in machine load (a shared CPU) hits both about equally; each side's time is the median of its
repetitions (``time.perf_counter``). Only the ratio is meant to be read across machines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Result", "paired", "result"]


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


def paired(facerep: Callable[[], object], lightly: Callable[[], object], *, warmup: int, reps: int, per: int = 1) -> tuple[list[float], list[float]]:
    """Seconds per unit of work for each repetition of both callables.

    Args:
        facerep, lightly: one repetition each (doing ``per`` units of work).
        warmup: untimed repetitions of each first (allocator, caches, lazy init, oneDNN primitives).
        reps: timed repetitions of each, interleaved.
        per: units of work in one call; times are divided by it.
    """
    for _ in range(warmup):
        facerep()
        lightly()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(reps):
        if i % 2 == 0:
            ta.append(_time(facerep) / per)
            tb.append(_time(lightly) / per)
        else:
            tb.append(_time(lightly) / per)
            ta.append(_time(facerep) / per)
    return ta, tb


def result(name: str, unit: str, times: tuple[list[float], list[float]], *, check: str, note: str) -> Result:
    ta, tb = times
    return Result(
        name=name, unit=unit, facerep_s=statistics.median(ta), lightly_s=statistics.median(tb), check=check, note=note, reps=len(ta),
        facerep_all_s=ta, lightly_all_s=tb,
    )
