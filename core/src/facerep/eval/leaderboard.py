"""The leaderboard of a ``facerep bench`` suite: rows (methods, random init, raw pixels) x columns
(evaluation entry, protocol, few-shot fraction), the primary metric's mean over seeds with its 95 %
interval.

Intervals count both sources of chance (:mod:`facerep.eval.outcomes`): the few-shot subsets (seeds)
and, where the records carry per-item outcomes (``Task.outcomes``, API 1.5), the finite test set,
resampled item by item. A method's cell is marked † when the paired 95 % interval of its difference
to its random-init row (the same backbone, the same subsets and test items) lies above zero, and ‡
when that holds against every raw-pixel row. Records without outcomes fall back to a paired t
interval over seeds (labelled "seeds only"); one seed without outcomes has no interval and no mark.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from facerep.eval.outcomes import ItemOutcomes, load_outcomes, paired_interval, row_interval

__all__ = ["cell_interval", "cell_stats", "compare", "compare_records", "leaderboard", "rule_caption", "write_leaderboard"]

LEVEL = 0.95


def _t(df: float) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf((1 + LEVEL) / 2, df))


def cell_stats(values: list[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1; 0 for one value), standard error, count and the t interval over
    seeds (``low`` / ``high``; NaN for one value)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    se = std / math.sqrt(n) if n > 1 else math.nan
    half = _t(n - 1) * se if n > 1 else math.nan
    return {"mean": mean, "std": std, "se": se, "n": n, "low": mean - half, "high": mean + half, "basis": "seeds only"}


def compare(a: list[float], b: list[float], higher_is_better: bool) -> dict[str, Any]:
    """Seeds only: how much ``a`` beats ``b`` (paired by seed, positive: better) and the paired t
    interval of that difference; ``marked`` when it excludes zero on the better side."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) * (1.0 if higher_is_better else -1.0)
    gain = float(d.mean())
    half = _t(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return {"gain": gain, "low": gain - half, "high": gain + half, "marked": bool(len(d) > 1 and gain - half > 0), "basis": "seeds only"}


def _outcomes(row: dict[str, Any], records: list[dict[str, Any]]) -> list[ItemOutcomes] | None:
    """The records' per-item outcomes in seed order, or None when any is missing."""
    if not records or not row.get("work_dir") or not all(r.get("outcomes") for r in records):
        return None
    try:
        return [load_outcomes(Path(row["work_dir"]) / r["outcomes"])[0] for r in records]
    except (OSError, ValueError):
        return None


def cell_interval(row: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's records of one cell (one per seed; ``row['work_dir']`` holds their outcomes): :func:`cell_stats` with
    the interval over items and seeds where outcomes exist."""
    values = [r["metrics"].get(r["primary"], math.nan) for r in records]
    cell = cell_stats(values)
    items = _outcomes(row, records)
    if items is not None:
        iv = row_interval(items, level=LEVEL)
        cell.update(low=iv.low, high=iv.high, basis="items + seeds", items=iv.items)
    return cell


def compare_records(a_row: dict[str, Any], a: list[dict[str, Any]], b_row: dict[str, Any], b: list[dict[str, Any]],
                  higher_is_better: bool) -> dict[str, Any] | None:
    """Paired by seed (the same few-shot subsets) and, with outcomes, by test item."""
    seeds = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    if not seeds:
        return None
    a = sorted((r for r in a if r["seed"] in seeds), key=lambda r: r["seed"])
    b = sorted((r for r in b if r["seed"] in seeds), key=lambda r: r["seed"])
    ia, ib = _outcomes(a_row, a), _outcomes(b_row, b)
    if ia is not None and ib is not None:
        try:
            iv = paired_interval(ia, ib, higher_is_better=higher_is_better, level=LEVEL)
        except ValueError:  # not the same test items
            iv = None
        if iv is not None:
            return {"gain": iv.estimate, "low": iv.low, "high": iv.high, "marked": bool(iv.low > 0), "basis": "items + seeds"}
    return compare([r["metrics"].get(r["primary"], math.nan) for r in a], [r["metrics"].get(r["primary"], math.nan) for r in b],
                   higher_is_better)


def _columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cols: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        for r in row["records"]:
            key = (r["name"], r["protocol"], r["fraction"])
            cols.setdefault(key, {"entry": r["name"], "protocol": r["protocol"], "fraction": r["fraction"], "metric": r["primary"],
                                  "higher_is_better": bool(r["higher_is_better"])})
    several = len({(c["entry"], c["protocol"]) for c in cols.values()}) > len({c["entry"] for c in cols.values()})
    for key, col in cols.items():
        proto = col["protocol"].split(".", 1)[-1]
        col["key"] = "|".join(map(str, key))
        col["label"] = f"{col['entry']}{f' ({proto})' if several else ''} @{col['fraction'] * 100:g}%"
    return list(cols.values())


def leaderboard(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cells, intervals and marks from each row's evaluation records (``facerep eval``'s ``results.json``)."""
    columns = _columns(rows)
    by_cell: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in row["records"]:
            groups["|".join(map(str, (r["name"], r["protocol"], r["fraction"])))].append(r)
        by_cell[row["row"]] = {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}
    named = {row["row"]: row for row in rows}
    table = {row["row"]: {key: cell_interval(row, recs) for key, recs in by_cell[row["row"]].items()} for row in rows}
    pixel_rows = [r["row"] for r in rows if r["kind"] == "pixels"]
    n_tests = 0
    for row in rows:
        if row["kind"] != "method":
            continue
        for col in columns:
            mine = by_cell[row["row"]].get(col["key"])
            if mine is None:
                continue
            cell, hib = table[row["row"]][col["key"]], col["higher_is_better"]
            ref = row.get("random_row")
            if ref in by_cell and col["key"] in by_cell[ref]:
                got = compare_records(row, mine, named[ref], by_cell[ref][col["key"]], hib)
                if got is not None:
                    n_tests += 1
                    cell["vs_random"], cell["gain_random"], cell["beats_random"] = got, got["gain"], got["marked"]
            against = [compare_records(row, mine, named[p], by_cell[p][col["key"]], hib) for p in pixel_rows if col["key"] in by_cell[p]]
            against = [g for g in against if g is not None]
            if against:
                n_tests += len(against)
                cell["vs_pixels"] = against
                cell["gain_pixels"] = min(g["gain"] for g in against)
                cell["beats_pixels"] = all(g["marked"] for g in against)
    for row in rows:
        cells = table[row["row"]]
        row["families_beating_both"] = sum(1 for c in cells.values() if c.get("beats_random") and c.get("beats_pixels"))
    return {"columns": columns, "comparisons": n_tests, "level": LEVEL,
            "rows": [{"row": r["row"], "kind": r["kind"], "random_row": r.get("random_row"), "work_dir": r.get("work_dir"),
                      "cells": table[r["row"]], "beating_both": r["families_beating_both"]} for r in rows]}


def _fmt(cell: dict[str, Any] | None) -> str:
    if cell is None or not math.isfinite(cell["mean"]):
        return "-"
    text = f"{cell['mean']:.4f}" + (f" [{cell['low']:.4f}, {cell['high']:.4f}]" if math.isfinite(cell["low"]) else "")
    marks = ("†" if cell.get("beats_random") else "") + ("‡" if cell.get("beats_pixels") else "")
    return text + (f" {marks}" if marks else "")


def rule_caption(n_tests: int, bases: set[str]) -> str:
    """The sentence under every table that marks differences."""
    basis = ("test items resampled with the seeds" if bases == {"items + seeds"} else
             "seeds only: these records carry no per-item outcomes" if bases == {"seeds only"} else
             "test items resampled with the seeds where the records carry per-item outcomes, seeds only elsewhere")
    return (f"Primary metric: mean over seeds [95 % interval]. † beats its random-init row and ‡ beats every raw-pixel row: "
            f"the paired 95 % interval of the difference (same subsets, same test items; {basis}) lies above zero. "
            f"{n_tests} comparison{'' if n_tests == 1 else 's'}: about {0.025 * n_tests:.1f} false marks are expected by chance "
            f"if no difference were real.")


def _budget_text(budget: dict[str, Any]) -> str:
    """``{'minutes': 10.0}`` -> ``10 minutes`` (the set field of a bench budget)."""
    return ", ".join(f"{v:g} {k}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in budget.items() if v is not None) or "none"


def _bases(board: dict[str, Any]) -> set[str]:
    out = set()
    for row in board["rows"]:
        for cell in row["cells"].values():
            for got in [cell.get("vs_random"), *cell.get("vs_pixels", [])]:
                if got:
                    out.add(got["basis"])
    return out or {"items + seeds"}


def _markdown(title: str, board: dict[str, Any], meta: dict[str, Any]) -> str:
    cols = board["columns"]
    arrows = {c["key"]: "↑" if c["higher_is_better"] else "↓" for c in cols}
    lines = [f"# Leaderboard: {title}", "",
             f"Budget: {_budget_text(meta['budget'])}; pretraining steps per method: "
             + ", ".join(f"{k} {v}" for k, v in meta["steps"].items()) + f"; this invocation: {meta['seconds']:.0f} s.", "",
             rule_caption(board.get("comparisons", 0), _bases(board)), "",
             "| row | " + " | ".join(f"{c['label']} {c['metric']} {arrows[c['key']]}" for c in cols) + " | †‡ |",
             "|---|" + "---|" * len(cols) + "---|"]
    for row in board["rows"]:
        both = str(row["beating_both"]) if row["kind"] == "method" else ""
        lines.append(f"| {row['row']} | " + " | ".join(_fmt(row["cells"].get(c["key"])) for c in cols) + f" | {both} |")
    plots = meta.get("plots", [])
    if plots:
        lines += ["", *[f"![{Path(p).stem}]({p})" for p in plots]]
    lines += ["", "Evaluation work dirs (every run, subsets, predictions): "
              + ", ".join(f"{r['row']}: `{r['work_dir']}`" for r in board["rows"] if r.get("work_dir"))]
    return "\n".join(lines) + "\n"


def _plots(out_dir: Path, board: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for fraction in sorted({c["fraction"] for c in board["columns"]}):
        cols = [c for c in board["columns"] if c["fraction"] == fraction]
        fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols) + 1, 3.4), dpi=100, squeeze=False)
        for ax, col in zip(axes[0], cols, strict=True):
            names = [r["row"] for r in board["rows"] if col["key"] in r["cells"]]
            cells = [r["cells"][col["key"]] for r in board["rows"] if col["key"] in r["cells"]]
            colors = ["tab:blue" if r["kind"] == "method" else "tab:gray" for r in board["rows"] if col["key"] in r["cells"]]
            lows = [c["low"] if math.isfinite(c["low"]) else c["mean"] for c in cells]
            highs = [c["high"] if math.isfinite(c["high"]) else c["mean"] for c in cells]
            err = [[max(0.0, c["mean"] - lo) for c, lo in zip(cells, lows, strict=True)],
                   [max(0.0, hi - c["mean"]) for c, hi in zip(cells, highs, strict=True)]]
            ax.bar(range(len(cells)), [c["mean"] for c in cells], yerr=err, capsize=3, color=colors)  # 95 % interval bars
            ax.set_xticks(range(len(cells)), names, rotation=60, ha="right", fontsize=7)
            lo, hi = min(lows), max(highs)
            pad = 0.15 * (hi - lo) + 1e-6
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_title(col["entry"] + ("" if col["protocol"] == cols[0]["protocol"] else f"\n{col['protocol']}"), fontsize=8)
            ax.set_ylabel(f"{col['metric']} {'↑' if col['higher_is_better'] else '↓'}", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
        fig.suptitle(f"{fraction * 100:g} % of the training labels", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"leaderboard_f{fraction:g}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path.name)
    return paths


def _clean(obj: Any) -> Any:
    """NaN (no standard error with one seed) as null: leaderboard.json stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_leaderboard(out_dir: Path, title: str, rows: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    """``leaderboard.json``, ``leaderboard.md`` and ``leaderboard_f<fraction>.png`` in ``out_dir``."""
    from facerep.workdir import atomic_write_text

    board = leaderboard(rows)
    meta["plots"] = _plots(out_dir, board) if board["columns"] else []
    board.update(title=title, **meta)
    atomic_write_text(out_dir / "leaderboard.json", json.dumps(_clean(board), indent=2, default=str))
    atomic_write_text(out_dir / "leaderboard.md", _markdown(title, board, meta))
    return board
