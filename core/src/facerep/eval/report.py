"""Results of an evaluation grid on disk: ``results.json`` (every record), ``results.md`` (a summary
table, mean ± std over seeds, and every record), ``plots/<entry>.png`` (primary metric vs few-shot
fraction, one line per protocol and weights) and, when random-init records sit beside others, the
gap to them per few-shot fraction (``gap_rows``; ``plots/gap_to_random_init.png``: FRL's low-data
question, does pretraining help more when labels are scarcer), and the gap of a row to the reference
row its records name (``reference_gap_rows``: self-distillation against its teacher). ``facerep report DIR`` renders them
again from ``results.json``; ``facerep report OUT --merge DIR...`` makes one report of several.

``results.jsonl`` holds the same records, one line each, appended as each run lands: a grid killed
after hours keeps what it measured, and ``facerep report`` / ``--merge`` read it where
``results.json`` (written when the grid ends) is missing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RECORDS", "append_record", "gap_rows", "merge_reports", "reference_gap_rows", "render_report", "summary_rows", "write_report"]

BASELINE = "random init"
#: Records as they land, one JSON object per line (see the module docstring).
RECORDS = "results.jsonl"


def append_record(out_dir: Path, record: dict[str, Any]) -> None:
    """Append one finished run's record to ``out_dir/results.jsonl`` (flushed at once)."""
    with open(Path(out_dir) / RECORDS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def summary_rows(records: list[dict[str, Any]], root: Path | None = None) -> list[dict[str, Any]]:
    """Mean, sample std and 95 % interval of the primary metric over seeds per (entry, weights,
    protocol, fraction, shots); the interval counts the test items too where the records' outcomes
    are in ``root`` (:func:`facerep.eval.leaderboard.cell_interval`)."""
    from facerep.eval.leaderboard import cell_interval

    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["name"], r["weights"], r["protocol"], r["fraction"], r.get("shots"))].append(r)
    rows = []
    for (name, weights, protocol, fraction, shots), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        cell = cell_interval({"work_dir": str(root) if root else None}, rs)
        rows.append({"name": name, "weights": weights, "protocol": protocol, "fraction": fraction, "shots": shots,
                     "metric": rs[0]["primary"], "higher_is_better": rs[0]["higher_is_better"], "mean": cell["mean"],
                     "std": cell["std"], "low": cell["low"], "high": cell["high"], "basis": cell["basis"], "seeds": len(rs),
                     "n_train": rs[0]["n_train"], "test": rs[0]["test"], "seconds": float(sum(r["seconds"] for r in rs))})
    return rows


def gap_rows(records: list[dict[str, Any]], baseline: str = BASELINE, root: Path | None = None) -> list[dict[str, Any]]:
    """Per (entry, protocol, other weights, fraction): the primary metric's difference to the
    ``baseline`` weights, signed so that positive means better, paired by seed (the same few-shot
    subset) and, with outcomes in ``root``, by test item; its 95 % interval (``low``, ``high``;
    :func:`facerep.eval.leaderboard.compare_records`), ``marked`` when the interval lies above zero,
    and ``relative`` = gap / |baseline mean|."""
    groups = _groups(records)
    return _paired(groups, [(key, groups.get((key[0], key[1], baseline, *key[3:]))) for key in groups if key[2] != baseline], root)


def reference_gap_rows(records: list[dict[str, Any]], root: Path | None = None) -> list[dict[str, Any]]:
    """As :func:`gap_rows`, but each row against the reference row its records name (``versus``: the
    same weights, subsets and test items under the reference's protocol, e.g. self-distillation's
    teacher, which is plain fine-tuning); ``reference`` names it."""
    groups = _groups(records)
    pairs = [(key, groups.get((key[0], rs[0]["versus"], *key[2:]))) for key, rs in groups.items() if rs[0].get("versus")]
    return [{**g, "reference": g["protocol_b"]} for g in _paired(groups, pairs, root)]


def _groups(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["name"], r["protocol"], r["weights"], r["fraction"], r.get("shots"))].append(r)
    return groups


def _paired(groups: dict[tuple, list[dict[str, Any]]], pairs: list[tuple[tuple, list[dict[str, Any]] | None]],
            root: Path | None) -> list[dict[str, Any]]:
    """One gap row per (group key, its baseline group's records)."""
    from facerep.eval.leaderboard import compare_records

    where = {"work_dir": str(root) if root else None}
    rows = []
    for (name, protocol, weights, fraction, shots), base in pairs:
        mine = groups[(name, protocol, weights, fraction, shots)]
        if not base:
            continue
        key = mine[0]["primary"]
        got = compare_records(where, mine, where, base, bool(mine[0]["higher_is_better"]))
        if got is None:
            continue
        seeds = sorted({r["seed"] for r in mine} & {r["seed"] for r in base})
        base_mean = float(np.mean([r["metrics"][key] for r in base if r["seed"] in seeds]))
        rows.append({"name": name, "protocol": protocol, "weights": weights, "fraction": fraction, "shots": shots, "metric": key,
                     "gap": got["gain"], "low": got["low"], "high": got["high"], "marked": got["marked"], "basis": got["basis"],
                     "seeds": len(seeds), "baseline": base_mean, "relative": got["gain"] / abs(base_mean) if base_mean else float("nan"),
                     "protocol_b": base[0]["protocol"]})
    return sorted(rows, key=lambda r: (r["name"], r["protocol"], r["weights"], r["fraction"]))


def _gap_markdown(rows: list[dict[str, Any]], versus: str | None = BASELINE) -> list[str]:
    """The gap table: to the random-init row (``versus``), or, with ``versus=None``, to each row's reference row."""
    from facerep.eval.leaderboard import rule_caption

    title = f"Gap to {versus}" if versus else "Gap to the reference row (a protocol's own baseline, e.g. self-distillation's teacher)"
    lines = ["", f"## {title} (positive: better; paired by seed and test item, [95 % interval])", "",
             "| task | protocol | weights | fraction | metric | baseline | gap [95 % interval] | relative | marked |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in rows:
        interval = f" [{g['low']:+.4f}, {g['high']:+.4f}]" if np.isfinite(g["low"]) else " (no interval: 1 seed, no outcomes)"
        against = g["protocol"] if versus else f"{g['protocol']} vs {g['reference']}"
        mark = "*" if g["marked"] else "worse" if g["high"] < 0 else ""
        lines.append(f"| {g['name']} | {against} | {g['weights']} | {g['fraction']:g} | {g['metric']} | {g['baseline']:.4f} | "
                     f"{g['gap']:+.4f}{interval} | {100 * g['relative']:+.1f} % | {mark} |")
    caption = rule_caption(len(rows), {g["basis"] for g in rows}).replace(
        "† beats its random-init row and ‡ beats every raw-pixel row",
        f"* marks a gain over {versus or 'the reference row'} (worse: a loss, the interval below zero)")
    return [*lines, "", caption.replace("Primary metric: mean over seeds [95 % interval]. ", "")]


def _markdown(title: str, records: list[dict[str, Any]], plots: list[str], root: Path | None = None) -> str:
    lines = [f"# {title}", "", "## Summary (primary metric, mean over seeds [95 % interval]; ↑ higher is better, ↓ lower)", "",
             "| task | weights | protocol | fraction | train images | test | metric | value | seeds | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary = summary_rows(records, root)
    for s in summary:
        arrow = "↑" if s["higher_is_better"] else "↓"
        frac = f"{s['fraction']:g}" + (f" x {s['shots']}-shot" if s["shots"] else "")
        value = f"{s['mean']:.4f}" + (f" [{s['low']:.4f}, {s['high']:.4f}]" if np.isfinite(s["low"]) else "")
        lines.append(f"| {s['name']} | {s['weights']} | {s['protocol']} | {frac} | {s['n_train']} | {s['test']} | {s['metric']} {arrow} | "
                     f"{value} | {s['seeds']} | {s['seconds']:.0f} |")
    bases = {s["basis"] for s in summary}
    lines += ["", "Intervals: " + ("test items resampled with the seeds (facerep.eval.outcomes)" if bases == {"items + seeds"} else
                                   "over seeds only where records carry no per-item outcomes") + "."]
    gaps, versus = gap_rows(records, root=root), reference_gap_rows(records, root=root)
    if gaps:
        lines += _gap_markdown(gaps)
    if versus:
        lines += _gap_markdown(versus, versus=None)
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

    rows = summary_rows(records, out_dir)
    paths = []
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        for line in dict.fromkeys((r["protocol"], r["weights"], r["shots"]) for r in mine):
            pts = sorted((r["fraction"], r["mean"], r["low"], r["high"]) for r in mine if (r["protocol"], r["weights"], r["shots"]) == line)
            x, y, lo, hi = (np.array(v) for v in zip(*pts, strict=True))
            e = np.clip(np.nan_to_num(np.stack([y - lo, hi - y])), 0, None)  # 95 % intervals (0 wide: rounding may dip below)
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
    gap = _gap_plot(out_dir, gap_rows(records, root=out_dir), plt)
    return paths + ([gap] if gap else [])


def _gap_plot(out_dir: Path, rows: list[dict[str, Any]], plt: Any) -> str | None:
    """Relative gap to random init (%) vs few-shot fraction with 95 % intervals, one line per entry and protocol."""
    lines = dict.fromkeys((r["name"], r["protocol"], r["weights"]) for r in rows)
    if not any(len({r["fraction"] for r in rows if (r["name"], r["protocol"], r["weights"]) == line}) > 1 for line in lines):
        return None  # one fraction: the table says it all
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for line in lines:
        mine = [r for r in rows if (r["name"], r["protocol"], r["weights"]) == line]
        pts = sorted((r["fraction"], 100 * r["relative"], *(100 * np.array([r["gap"] - r["low"], r["high"] - r["gap"]])
                                                            / (abs(r["baseline"]) or np.inf))) for r in mine)
        x, y, lo, hi = (np.array(v) for v in zip(*pts, strict=True))
        err = np.clip(np.nan_to_num(np.stack([lo, hi])), 0, None)
        ax.errorbar(x * 100, y, yerr=err, marker="o", capsize=3, label=f"{line[0]} ({line[2]})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training labels (%)")
    ax.set_ylabel(f"gap to {BASELINE} (% of its value; + better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "plots" / "gap_to_random_init.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path.relative_to(out_dir))


def write_report(out_dir: Path, title: str, summary: dict[str, Any], *, save_json: bool = True) -> str:
    """``results.json`` (unless ``save_json`` is false) + plots + ``results.md``; returns the Markdown."""
    out_dir = Path(out_dir)
    if save_json:
        (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    records = summary.get("results", [])
    plots = _plots(out_dir, records) if records else []
    text = _markdown(title, records, plots, out_dir)
    (out_dir / "results.md").write_text(text)
    return text


def _read_results(out_dir: Path) -> dict[str, Any]:
    """``results.json``; where a run did not finish, its records so far from ``results.jsonl``
    (the summary then has ``"unfinished": True``)."""
    from facerep.errors import ConfigError

    path = out_dir / "results.json"
    if not path.is_file():
        if (out_dir / RECORDS).is_file():
            return {"work_dir": str(out_dir), "title": out_dir.name, "unfinished": True, "results": _read_records(out_dir / RECORDS)}
        raise ConfigError(f"{out_dir}: no results.json or {RECORDS} (not an evaluation work dir)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def _read_records(path: Path) -> list[dict[str, Any]]:
    from facerep.errors import ConfigError

    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # the line being written when the run was killed: that run is lost, not the others
                break
            raise ConfigError(f"{path}, line {i}: not valid JSON: {exc}") from None
        missing = [k for k in _RUN_FIELDS if k not in record] if isinstance(record, dict) else list(_RUN_FIELDS)
        if missing:
            raise ConfigError(f"{path}, line {i}: not an evaluation record (no {', '.join(missing)})")
        records.append(record)
    latest = {_run_key(r): r for r in records}  # a resumed run evaluates again: its later record of a run counts
    return list(latest.values())


_RUN_FIELDS = ("name", "protocol", "weights", "fraction", "seed")


def _run_key(r: dict[str, Any]) -> tuple:
    return (r["name"], r["protocol"], r["weights"], r["fraction"], r.get("shots"), r["seed"])


def render_report(out_dir: str | Path) -> str:
    """Render ``results.md`` and the plots again from ``results.json``; for a run that did not
    finish, from the records in ``results.jsonl`` (``results.json`` is then left unwritten)."""
    out_dir = Path(out_dir)
    summary = _read_results(out_dir)
    if summary.get("unfinished"):
        title = f"{summary['title']} (unfinished: {len(summary['results'])} runs from {RECORDS})"
        return write_report(out_dir, title, summary, save_json=False)
    return write_report(out_dir, summary.get("title", out_dir.name), summary)


def merge_reports(out_dir: str | Path, sources: list[str | Path], overwrite: bool = False) -> str:
    """One report over the records of several evaluation work dirs (a grid split into jobs, one per
    family or per machine). Subset and sample paths are rewritten to stay valid from ``out_dir``; a
    run (entry, protocol, weights, fraction, shots, seed) found in two sources is refused, naming both."""
    import os

    from facerep.errors import ConfigError

    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() and not overwrite:
        raise ConfigError(f"{out_dir}: already holds results.json (--overwrite replaces it)")
    records: list[dict[str, Any]] = []
    seen: dict[tuple, Path] = {}
    unfinished = []
    for src in map(Path, sources):
        found = _read_results(src)
        if found.get("unfinished"):
            unfinished.append(str(src))
        for r in found.get("results", []):
            key = _run_key(r)
            if key in seen:
                raise ConfigError(f"{src}: run {key} is also in {seen[key]}; merge disjoint grids")
            seen[key] = src
            moved = {k: os.path.relpath(src / r[k], out_dir) for k in ("subset", "samples", "model", "outcomes") if r.get(k)}
            records.append({**r, **moved})
    out_dir.mkdir(parents=True, exist_ok=True)
    title = out_dir.name + (f" (unfinished jobs, their records so far: {', '.join(unfinished)})" if unfinished else "")
    summary = {"work_dir": str(out_dir), "title": title, "merged_from": [str(s) for s in sources], "results": records}
    if unfinished:
        summary["unfinished_sources"] = unfinished
    return write_report(out_dir, title, summary)
