"""The leaderboard of a ``facerep bench`` suite: rows (methods, random init, raw pixels) x columns
(evaluation entry, protocol, few-shot fraction), the primary metric's mean ± std over seeds.

A method's cell is marked † when it beats its random-init row (the same backbone) and ‡ when it beats
every raw-pixel row, each by more than twice the standard error of the difference of the two means,
``2 * sqrt(se_a^2 + se_b^2)`` with ``se = std / sqrt(n)`` (sample std over seeds, ``ddof=1``). With
a single seed there is no standard error and no mark.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cell_stats", "compare", "leaderboard", "write_leaderboard"]


def cell_stats(values: list[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1; 0 for one value), standard error and count."""
    v = np.asarray(values, dtype=np.float64)
    n = int(np.isfinite(v).sum())
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "se": std / math.sqrt(n) if n > 1 else math.nan, "n": n}


def compare(a: dict[str, float], b: dict[str, float], higher_is_better: bool) -> tuple[float, bool]:
    """(how much ``a`` is better than ``b``, whether by more than twice the standard error)."""
    gain = (a["mean"] - b["mean"]) * (1.0 if higher_is_better else -1.0)
    se = math.sqrt(a["se"] ** 2 + b["se"] ** 2)
    return gain, bool(math.isfinite(se) and gain > 2.0 * se)


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
    """Cells and marks from each row's evaluation records (``facerep eval``'s ``results.json``)."""
    columns = _columns(rows)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        values: dict[str, list[float]] = defaultdict(list)
        for r in row["records"]:
            values["|".join(map(str, (r["name"], r["protocol"], r["fraction"])))].append(r["metrics"].get(r["primary"], math.nan))
        table[row["row"]] = {key: cell_stats(v) for key, v in values.items()}
    pixel_rows = [r["row"] for r in rows if r["kind"] == "pixels"]
    for row in rows:
        if row["kind"] != "method":
            continue
        for col in columns:
            cell = table[row["row"]].get(col["key"])
            if cell is None:
                continue
            ref = table.get(row.get("random_row") or "", {}).get(col["key"])
            if ref is not None:
                cell["gain_random"], cell["beats_random"] = compare(cell, ref, col["higher_is_better"])
            pixels = [table[p].get(col["key"]) for p in pixel_rows if table[p].get(col["key"]) is not None]
            if pixels:
                outcomes = [compare(cell, p, col["higher_is_better"]) for p in pixels]
                cell["gain_pixels"] = min(g for g, _ in outcomes)
                cell["beats_pixels"] = all(b for _, b in outcomes)
    for row in rows:
        cells = table[row["row"]]
        row["families_beating_both"] = sum(1 for c in cells.values() if c.get("beats_random") and c.get("beats_pixels"))
    return {"columns": columns, "rows": [{"row": r["row"], "kind": r["kind"], "random_row": r.get("random_row"),
                                           "work_dir": r.get("work_dir"), "cells": table[r["row"]],
                                           "beating_both": r["families_beating_both"]} for r in rows]}


def _fmt(cell: dict[str, Any] | None) -> str:
    if cell is None or not math.isfinite(cell["mean"]):
        return "-"
    text = f"{cell['mean']:.4f}" + (f" ± {cell['std']:.4f}" if cell["n"] > 1 else "")
    marks = ("†" if cell.get("beats_random") else "") + ("‡" if cell.get("beats_pixels") else "")
    return text + (f" {marks}" if marks else "")


def _budget_text(budget: dict[str, Any]) -> str:
    """``{'minutes': 10.0}`` -> ``10 minutes`` (the set field of a bench budget)."""
    return ", ".join(f"{v:g} {k}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in budget.items() if v is not None) or "none"


def _markdown(title: str, board: dict[str, Any], meta: dict[str, Any]) -> str:
    cols = board["columns"]
    arrows = {c["key"]: "↑" if c["higher_is_better"] else "↓" for c in cols}
    lines = [f"# Leaderboard: {title}", "",
             f"Budget: {_budget_text(meta['budget'])}; pretraining steps per method: "
             + ", ".join(f"{k} {v}" for k, v in meta["steps"].items()) + f"; this invocation: {meta['seconds']:.0f} s.", "",
             "Primary metric, mean ± std over seeds. † beats its random-init row and ‡ beats every raw-pixel row, each by more "
             "than twice the standard error of the difference (needs 2+ seeds).", "",
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
            ax.bar(range(len(cells)), [c["mean"] for c in cells], yerr=[c["std"] for c in cells], capsize=3, color=colors)
            ax.set_xticks(range(len(cells)), names, rotation=60, ha="right", fontsize=7)
            lo = min(c["mean"] - c["std"] for c in cells)
            hi = max(c["mean"] + c["std"] for c in cells)
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
