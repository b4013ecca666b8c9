"""Results of an evaluation grid on disk: ``results.json`` (every record), ``results.md`` (a summary
table, mean ± std over seeds, and every record), ``plots/<entry>.png`` (primary metric vs few-shot
fraction, one line per protocol and weights). ``facerep report DIR`` renders them again from
``results.json``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_report", "summary_rows", "write_report"]


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std of the primary metric over seeds per (entry, weights, protocol, fraction, shots)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["name"], r["weights"], r["protocol"], r["fraction"], r.get("shots"))].append(r)
    rows = []
    for (name, weights, protocol, fraction, shots), rs in groups.items():
        key = rs[0]["primary"]
        values = np.array([r["metrics"].get(key, np.nan) for r in rs], dtype=np.float64)
        rows.append({"name": name, "weights": weights, "protocol": protocol, "fraction": fraction, "shots": shots,
                     "metric": key, "higher_is_better": rs[0]["higher_is_better"], "mean": float(np.nanmean(values)),
                     "std": float(np.nanstd(values)), "seeds": len(rs), "n_train": rs[0]["n_train"], "test": rs[0]["test"],
                     "seconds": float(sum(r["seconds"] for r in rs))})
    return rows


def _markdown(title: str, records: list[dict[str, Any]], plots: list[str]) -> str:
    lines = [f"# {title}", "", "## Summary (primary metric, mean ± std over seeds; ↑ higher is better, ↓ lower)", "",
             "| task | weights | protocol | fraction | train images | test | metric | value | seeds | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary_rows(records):
        arrow = "↑" if s["higher_is_better"] else "↓"
        frac = f"{s['fraction']:g}" + (f" x {s['shots']}-shot" if s["shots"] else "")
        value = f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s["seeds"] > 1 else "")
        lines.append(f"| {s['name']} | {s['weights']} | {s['protocol']} | {frac} | {s['n_train']} | {s['test']} | {s['metric']} {arrow} | "
                     f"{value} | {s['seeds']} | {s['seconds']:.0f} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    samples = sorted({r["samples"] for r in records if r.get("samples")})
    if samples:
        lines += ["", "## Predictions on test images", ""] + [f"![{Path(p).stem}]({p})" for p in samples]
    lines += ["", "## Every run", "", "| task | weights | protocol | fraction | seed | metrics | subset |", "|---|---|---|---|---|---|---|"]
    for r in records:
        shown = {k: v for k, v in r["metrics"].items() if not k.startswith(("acc_", "f1_", "nme_per", "icc_"))}
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in list(shown.items())[:8])
        cells = (r["name"], r["weights"], r["protocol"], f"{r['fraction']:g}", r["seed"], metrics, r.get("subset", ""))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def _plots(out_dir: Path, records: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = summary_rows(records)
    paths = []
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        for line in dict.fromkeys((r["protocol"], r["weights"], r["shots"]) for r in mine):
            pts = sorted((r["fraction"], r["mean"], r["std"]) for r in mine if (r["protocol"], r["weights"], r["shots"]) == line)
            x, y, e = (np.array(v) for v in zip(*pts, strict=True))
            label = f"{line[0]} ({line[1]})" + (f" {line[2]}-shot" if line[2] else "")
            ax.errorbar(x * 100, y, yerr=e, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("training data (%)")
        ax.set_ylabel(mine[0]["metric"] + (" (higher is better)" if mine[0]["higher_is_better"] else " (lower is better)"))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "plots" / ("".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        paths.append(str(path.relative_to(out_dir)))
    return paths


def write_report(out_dir: Path, title: str, summary: dict[str, Any]) -> str:
    """``results.json`` + plots + ``results.md``; returns the Markdown."""
    out_dir = Path(out_dir)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    records = summary.get("results", [])
    plots = _plots(out_dir, records) if records else []
    text = _markdown(title, records, plots)
    (out_dir / "results.md").write_text(text)
    return text


def render_report(out_dir: str | Path) -> str:
    """Render ``results.md`` and the plots again from ``results.json``."""
    from facerep.errors import ConfigError

    out_dir = Path(out_dir)
    path = out_dir / "results.json"
    if not path.is_file():
        raise ConfigError(f"{out_dir}: no results.json (not an evaluation work dir)")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return write_report(out_dir, summary.get("title", out_dir.name), summary)
