"""``facerep bench``: the leaderboard's statistics on hand-made records, a whole suite in-process, and
a second invocation that redoes nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from facerep.eval.leaderboard import cell_stats, compare, leaderboard


def _records(entry: str, values: list[float], *, higher: bool = True, protocol: str = "core.knn", fraction: float = 0.1) -> list[dict]:
    return [{"name": entry, "protocol": protocol, "fraction": fraction, "seed": i, "primary": "m", "higher_is_better": higher,
             "metrics": {"m": v}} for i, v in enumerate(values)]


def test_cell_statistics_and_the_paired_seed_interval_without_outcomes():
    s = cell_stats([0.79, 0.80, 0.81])
    assert s["mean"] == pytest.approx(0.80) and s["std"] == pytest.approx(0.01) and s["n"] == 3
    assert s["se"] == pytest.approx(0.01 / math.sqrt(3))
    assert s["high"] - s["mean"] == pytest.approx(4.303 * 0.01 / math.sqrt(3), rel=1e-3), "t with 2 df, not 2 SE"
    got = compare([0.79, 0.80, 0.81], [0.69, 0.70, 0.71], higher_is_better=True)
    assert got["gain"] == pytest.approx(0.10) and got["marked"]  # the same subset-to-subset swing: paired, no spread
    # gain 0.015, paired differences 0.01, 0.015, 0.02: sd 0.005, interval 0.015 +- 4.303 * 0.0029 > 0
    assert compare([0.70, 0.715, 0.73], [0.69, 0.70, 0.71], True)["marked"]
    # unpaired-looking swings: differences 0.03, -0.02, 0.035 straddle zero after t with 2 df
    assert not compare([0.72, 0.68, 0.745], [0.69, 0.70, 0.71], True)["marked"]
    assert compare([0.1, 0.1], [0.2, 0.2], higher_is_better=False)["gain"] == pytest.approx(0.1)
    assert compare([0.9], [0.1], True)["marked"] is False, "one seed without outcomes: no interval, no mark"


def test_leaderboard_marks_methods_against_their_random_row_and_every_pixel_row():
    rows = [
        {"row": "moco", "kind": "method", "random_row": "random init",
         "records": _records("fer", [0.40, 0.41, 0.42]) + _records("afw", [0.20, 0.21, 0.19], higher=False)},
        {"row": "random init", "kind": "random",
         "records": _records("fer", [0.30, 0.31, 0.29]) + _records("afw", [0.30, 0.31, 0.29], higher=False)},
        {"row": "raw pixels 24x24 grey", "kind": "pixels",
         "records": _records("fer", [0.405, 0.415, 0.41]) + _records("afw", [0.40, 0.41, 0.39], higher=False)},
    ]
    board = leaderboard(rows)
    assert [c["label"] for c in board["columns"]] == ["fer @10%", "afw @10%"]
    moco = board["rows"][0]["cells"]
    fer, afw = moco["fer|core.knn|0.1"], moco["afw|core.knn|0.1"]
    assert fer["beats_random"] and not fer["beats_pixels"], "0.41 vs pixels 0.41: not significant"
    assert afw["beats_random"] and afw["beats_pixels"] and afw["gain_random"] == pytest.approx(0.10), "NME: lower is better"
    assert board["rows"][0]["beating_both"] == 1
    assert "beats_random" not in board["rows"][1]["cells"]["fer|core.knn|0.1"], "baselines are not marked"
    assert board["comparisons"] == 4 and {fer["vs_random"]["basis"]} == {"seeds only"}


def test_with_outcomes_the_test_set_sampling_decides_the_mark(tmp_path):
    """Two rows 0.03 apart on 200 test items, identical across seeds: seeds alone see no spread and
    would mark. Item by item the better row wins 10 items and loses 4: the paired bootstrap's SE of
    the difference is sqrt((14/200 - 0.03^2) / 200) = 0.019, the interval 0.03 +- 0.036 holds zero."""
    from facerep.eval.outcomes import ItemOutcomes, save_outcomes

    rng = np.random.default_rng(0)
    base = rng.random(200) < 0.5
    better = base.copy()
    better[np.flatnonzero(~base)[:10]] = True  # 10 more right answers
    better[np.flatnonzero(base)[:4]] = False  # 4 fewer: +0.03 net
    rows = []
    for row, correct in (("moco", better), ("random init", base)):
        wd = tmp_path / row.replace(" ", "_")
        recs = []
        for seed in range(3):
            save_outcomes(wd / f"o{seed}.npz", ItemOutcomes(correct.astype(float)), test="toy")
            recs.append({"name": "fer", "protocol": "core.knn", "fraction": 0.1, "seed": seed, "primary": "acc",
                         "higher_is_better": True, "metrics": {"acc": float(correct.mean())}, "outcomes": f"o{seed}.npz"})
        rows.append({"row": row, "kind": "method" if row == "moco" else "random", "random_row": "random init", "work_dir": str(wd),
                     "records": recs})
    board = leaderboard(rows)
    cell = board["rows"][0]["cells"]["fer|core.knn|0.1"]
    assert cell["vs_random"]["basis"] == "items + seeds" and cell["gain_random"] == pytest.approx(0.03)
    assert not cell["beats_random"] and cell["vs_random"]["low"] < 0 < cell["vs_random"]["high"]
    assert compare([0.53] * 3, [0.50] * 3, True)["marked"], "the seeds-only rule would have marked it"
    assert cell["low"] < cell["mean"] < cell["high"] and cell["basis"] == "items + seeds"


def _suite(tmp_path: Path, methods: list[dict], steps: int = 3) -> Path:
    ev = {"evaluate": [{"name": "noise-expression", "label": "expression", "protocol": {"name": "core.knn", "params": {"k": 3}},
                        "train": {"name": "local.noise"}, "test": {"name": "local.noise", "params": {"seed": 1}},
                        "fractions": [0.5, 1.0], "seeds": [0, 1]}]}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(ev))
    suite = {"name": "toy_suite", "methods": methods, "budget": {"steps": steps}, "evaluate": str(tmp_path / "eval.yaml"),
             "baselines": {"random_init": True, "pixels": []}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _method(tmp_path: Path, name: str, out_dim: int) -> dict:
    cfg = {"name": name, "data": {"name": "local.noise"}, "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
           "objective": {"name": "local.toy", "params": {"crop": 24, "out_dim": out_dim}},
           "train": {"batch_size": 8, "optimizer": {"type": "sgd", "lr": 0.05}, "channels_last": False, "log_every": 1}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return {"name": name, "config": str(tmp_path / f"{name}.yaml")}


def test_a_suite_pretrains_evaluates_and_reuses_finished_work(tmp_path, local_plugins, monkeypatch, capsys):
    import facerep.run
    from facerep.bench import run_bench

    path = _suite(tmp_path, [_method(tmp_path, "toy_a", 16), _method(tmp_path, "toy_b", 8)])
    board = run_bench(path, work_dir=tmp_path / "bench", plugins=local_plugins)
    wd = tmp_path / "bench"
    assert [r["row"] for r in board["rows"]] == ["toy_a", "toy_b", "random init"], "both methods share one backbone: one random row"
    assert [c["label"] for c in board["columns"]] == ["noise-expression @50%", "noise-expression @100%"]
    assert board["steps"] == {"toy_a": 3, "toy_b": 3}
    saved = json.loads((wd / "leaderboard.json").read_text())
    assert saved["rows"][0]["cells"]["noise-expression|core.knn|0.5"]["n"] == 2
    text = (wd / "leaderboard.md").read_text()
    assert "Budget: 3 steps; pretraining steps per method: toy_a 3, toy_b 3;" in text
    assert "| toy_a |" in text and "| random init |" in text and "![leaderboard_f0.5](leaderboard_f0.5.png)" in text
    assert (wd / "leaderboard_f1.png").is_file()
    pre = sorted((wd / "pretrain").iterdir())
    assert len(pre) == 2 and all((p / "backbone.safetensors").is_file() for p in pre)
    # the same random subsets for every row: one subset file per (fraction, seed), identical across rows
    subsets = {p.relative_to(p.parents[1]): p.read_text() for p in wd.glob("eval/*/subsets/*.json")}
    by_name: dict[str, set[str]] = {}
    for rel, content in subsets.items():
        by_name.setdefault(rel.name, set()).add(content)
    assert len(by_name) == 4 and all(len(v) == 1 for v in by_name.values())

    # a second invocation: nothing is trained or evaluated again
    calls = []
    monkeypatch.setattr(facerep.run, "run", lambda *a, **k: calls.append(a))
    again = run_bench(path, work_dir=wd, plugins=local_plugins)
    assert calls == [] and again["rows"] == json.loads(json.dumps(board["rows"]))  # (cells as JSON round-trips)

    # a changed budget is a new key: new pretraining dirs, the old ones kept
    capsys.readouterr()
    run_bench(path, work_dir=wd, plugins=local_plugins, dry_run=True, overrides=["budget.steps=4"])
    out = capsys.readouterr().out
    assert out.count("to do") == 4, "two pretrainings and their evaluations; the random-init row does not depend on the budget"
    assert "random init         done" in out and len(list((wd / "pretrain").iterdir())) == 2


def test_bad_suites_name_the_field(tmp_path, local_plugins, capsys):
    from facerep.cli import main

    path = _suite(tmp_path, [_method(tmp_path, "toy_a", 16)])
    for override, needle in [("budget.minutes=3", "budget: give exactly one of steps, images, minutes"),
                             ("budget.steps=-1", "budget.steps: must be > 0"),
                             ("methods.0.config=nowhere.yaml", "config not found: nowhere.yaml"),
                             ("methods.0.overrides=[objective.params.nope=1]", "methods.0 ("),
                             ("methods.0.overrides=[objective.params.nope=1]", "objective.params.nope: unknown key")]:
        assert main(["bench", str(path), "--work-dir", str(tmp_path / "b"), "-o", override]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err


def test_a_corrupt_bench_state_is_one_clear_error(tmp_path, local_plugins, capsys):
    from facerep.cli import main

    path = _suite(tmp_path, [_method(tmp_path, "toy_a", 16)])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bench_state.json").write_text("{not json")
    assert main(["bench", str(path), "--work-dir", str(tmp_path / "b"), "--dry-run"]) == 3
    err = capsys.readouterr().err
    assert "bench_state.json: not valid JSON" in err and "Traceback" not in err
    assert (tmp_path / "b" / "bench_state.json").read_text() == "{not json"


def test_pixel_rows_read_their_whole_map_where_networks_read_a_grid(tmp_path, local_plugins):
    from facerep.bench import run_bench

    path = _suite(tmp_path, [_method(tmp_path, "toy_a", 16)])
    ev = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    ev["evaluate"][0]["protocol"] = {"name": "core.linear_probe", "params": {"readout": "grid2"}}
    ev["evaluate"][0]["backbone_layers"] = [1, 2]
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(ev))
    run_bench(path, work_dir=tmp_path / "b", plugins=local_plugins, dry_run=True,
              overrides=["baselines.pixels=[{size: 8, grey: true}]"])
    readouts = {}
    for cfg in (tmp_path / "b" / "configs").glob("eval_*.yaml"):
        data = yaml.safe_load(cfg.read_text())
        readouts[data["name"].split("/", 1)[1]] = data["evaluate"][0]["protocol"]["params"]["readout"]
    assert readouts == {"toy_a": "grid2", "random init": "grid2", "raw pixels 8x8 grey": "pooled"}
    assert yaml.safe_load((tmp_path / "eval.yaml").read_text())["evaluate"][0]["protocol"]["params"]["readout"] == "grid2"


def test_a_minutes_budget_is_calibrated_on_training_steps_not_on_building_the_data(tmp_path, local_plugins, monkeypatch):
    # preloading a face pool takes longer than many steps: counting it made a 10-minute budget a
    # third of the steps it affords; the calibration times steps 17-32 only
    import time

    import facerep.engine.runner
    from facerep.bench import _calibrate

    real = facerep.engine.runner.build

    def slow_data(resolved, **deps):
        if resolved.kind == "dataset":
            time.sleep(5.0)
        return real(resolved, **deps)

    monkeypatch.setattr(facerep.engine.runner, "build", slow_data)
    raw = yaml.safe_load(Path(_method(tmp_path, "toy_a", 8)["config"]).read_text())
    start = time.perf_counter()
    per_step = _calibrate(raw, tmp_path / "bench", "toy_a", local_plugins)
    total = time.perf_counter() - start
    assert 0 < per_step * 16 < total - 5.0, "the timed interval (steps 17-32) lies after the data was built"
    assert sorted(p.name for p in (tmp_path / "bench" / "calibrate" / "toy_a").glob("iter_*.pth")) == ["iter_16.pth", "iter_32.pth"]
