"""The ``facerep`` command, run as a subprocess: exit codes, messages, laziness, outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

FACEREP = [sys.executable, "-m", "facerep.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREP_")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def facerep(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FACEREP, *map(str, args)], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=300, check=False)


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _labelled_folders(root: Path, per_class: int, seed: int) -> Path:
    """``root/<class>/<img>.png``: class ``bright`` is light grey, ``dark`` dark grey, both noisy."""
    import cv2

    rng = np.random.default_rng(seed)
    for cls, level in (("bright", 200), ("dark", 50)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(level + rng.normal(0, 20, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            assert cv2.imwrite(str(root / cls / f"{i}.png"), img)
    return root


def _eval_config(train: str, test: str, *, protocols: tuple[dict, ...] = ({"name": "core.knn", "params": {"k": 3}},)) -> dict:
    folder = lambda root, split: {"name": "core.image_folder", "params": {"roots": [root], "labels": "folder", "split": split}}
    return {
        "name": "baseline",
        "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
        "evaluate": [
            {"protocol": p, "train": folder(train, "train"), "test": folder(test, "test"), "label": "expression"} for p in protocols
        ],
    }


def _error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    return res.stderr


# ---------------------------------------------------------------------------------------------
# fast paths stay fast
# ---------------------------------------------------------------------------------------------


def test_help_and_list_import_no_torch(tmp_path):
    code = textwrap.dedent("""
        import sys, facerep.cli
        for argv in (["list"], ["list", "--kind", "objective"], ["--help"], ["run", "--help"], ["--version"]):
            try:
                rc = facerep.cli.main(argv)
            except SystemExit as exc:
                rc = exc.code
            assert rc in (0, None), (argv, rc)
        heavy = sorted(m for m in ("torch", "timm", "mmengine") if m in sys.modules)
        assert not heavy, f"imported {heavy}"
        print("LIGHT")
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("LIGHT")


def test_console_script_help_lists_the_commands(tmp_path):
    script = Path(sys.executable).with_name("facerep")
    cmd = [str(script)] if script.is_file() else FACEREP
    res = subprocess.run([*cmd, "--help"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0
    for command in ("list", "plugins", "run"):
        assert re.search(rf"^\s+{command}\s", res.stdout, re.M), command
    res = facerep(cwd=tmp_path)  # no command: help, non-zero
    assert res.returncode == 1 and "usage: facerep" in res.stdout


def test_list_shows_every_kind_with_facerep_core_as_provider(tmp_path):
    res = facerep("list", cwd=tmp_path, env=_env(FACEREP_PLUGINS=""))  # core alone, whatever else is installed
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for kind in ("datasets", "backbones", "objectives", "heads", "tasks", "protocols"):
        assert re.search(rf"^{kind} \(\d+\)$", out, re.M), kind
    assert re.search(r"^backbones \(2\)\nname\s+provided by\s+summary\n[- ]+\ncore\.pixels\s+facerep-core 0\.1\.0\s+parameter-free.*\n"
                     r"core\.timm\s+facerep-core 0\.1\.0\s+any timm", out, re.M)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("core.")}
    assert set(rows) == {"core.image_folder", "core.image_shards", "core.synthetic", "core.pixels", "core.timm", "core.knn",
                         "core.linear_probe", "core.frozen_head", "core.finetune", "core.self_distill"}
    assert all("facerep-core 0.1.0" in line for line in rows.values())
    assert re.search(r"^core\s+facerep-core 0\.1\.0\s+loaded\s+core built-ins$", out, re.M)
    only = facerep("list", "--kind", "protocol", cwd=tmp_path, env=_env(FACEREP_PLUGINS=""))
    assert "protocols (5)" in only.stdout and "datasets" not in only.stdout and "core.timm" not in only.stdout
    assert "\nplugins\n" not in only.stdout, "--kind lists that kind only"


# ---------------------------------------------------------------------------------------------
# errors: one readable line, the documented exit code
# ---------------------------------------------------------------------------------------------


def test_unknown_component_exits_5_with_close_matches_and_plugins(tmp_path):
    cfg = _write(tmp_path / "c.yaml", {
        "data": {"name": "core.synthtic"}, "backbone": {"name": "core.timm"}, "objective": {"name": "anything"},
    })
    res = facerep("run", cfg, cwd=tmp_path)
    assert res.returncode == 5
    err = _error_line(res)
    assert err.startswith("facerep: error: data.name: unknown dataset 'core.synthtic'. did you mean: core.synthetic")
    assert "Registered datasets: core.image_folder, core.image_shards, core.synthetic" in err
    assert "Installed plugins: core (facerep-core 0.1.0)" in err
    assert not (tmp_path / "work_dirs").exists()


def test_malformed_config_exits_2_naming_the_field_path(tmp_path):
    cfg = _write(tmp_path / "c.yaml", {**_eval_config("a", "b"), "train": {"max_steps": "ten", "optimizer": {"lrr": 0.1}}})
    res = facerep("run", cfg, cwd=tmp_path)
    assert res.returncode == 2
    err = _error_line(res)
    assert err.startswith(f"facerep: error: {cfg}: invalid config:")
    assert re.search(r"^  train\.max_steps: ValueError: invalid literal for int\(\)", err, re.M)
    assert re.search(r"^  train\.optimizer\.lrr: unknown key\(s\) lrr \(allowed: type, lr,", err, re.M)
    # a bad override is a config error too, and so is broken YAML (naming the file)
    res = facerep("run", cfg, "-o", "train.max_steps", cwd=tmp_path)
    assert res.returncode == 2 and "override 'train.max_steps' is not of the form key.path=value" in _error_line(res)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {max_steps: 3\n")
    res = facerep("run", broken, cwd=tmp_path)
    assert res.returncode == 2 and _error_line(res).startswith(f"facerep: error: {broken}: not valid YAML")


def test_missing_config_file_exits_2(tmp_path):
    res = facerep("run", "no_such_config.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert _error_line(res).startswith("facerep: error: config not found: no_such_config.yaml (not a file, not a preset; presets:")


def test_missing_data_folder_exits_3_naming_the_path(tmp_path):
    present = _labelled_folders(tmp_path / "train", 2, seed=0)
    cfg = _write(tmp_path / "c.yaml", _eval_config(str(present), "${FACEREP_DATA}/no_such_test_split"))
    res = facerep("run", cfg, "--work-dir", tmp_path / "wd", cwd=tmp_path, env=_env(FACEREP_DATA=str(tmp_path / "data")))
    assert res.returncode == 3, res.stderr[-2000:]
    missing = tmp_path / "data" / "no_such_test_split"
    assert f"facerep: error: data folder not found: {missing} (from '${{FACEREP_DATA}}/no_such_test_split')" in _error_line(res)


# ---------------------------------------------------------------------------------------------
# --dry-run and a random-weights baseline
# ---------------------------------------------------------------------------------------------


def test_dry_run_prints_the_component_table_and_writes_nothing(tmp_path):
    cfg = _write(tmp_path / "c.yaml", _eval_config("/nowhere/train", "/nowhere/test"))  # not built: paths unchecked
    before = sorted(p.name for p in tmp_path.iterdir())
    res = facerep("run", cfg, "--dry-run", "--work-dir", tmp_path / "wd", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    table, params = res.stdout.strip().split("\n\n", 1)
    rows = [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()]
    assert rows[0] == ["config path", "kind", "component", "provided by"]
    assert set(rows[1][0]) <= {"-", " "}
    assert rows[2:] == [
        ["backbone", "backbone", "core.timm", "facerep-core 0.1.0"],
        ["evaluate.0.protocol", "protocol", "core.knn", "facerep-core 0.1.0"],
        ["evaluate.0.train", "dataset", "core.image_folder", "facerep-core 0.1.0"],
        ["evaluate.0.test", "dataset", "core.image_folder", "facerep-core 0.1.0"],
    ]
    # then every resolved parameter, defaults filled in
    assert "backbone (core.timm):\n  model = 'resnet10t'\n" in params and "  layers = []" in params
    assert "evaluate.0.protocol (core.knn):\n  k = 3\n" in params
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no work dir, no work_dirs/


def test_random_weights_baseline_prints_results_and_writes_them(tmp_path):
    train = _labelled_folders(tmp_path / "faces" / "train", 8, seed=0)
    test = _labelled_folders(tmp_path / "faces" / "test", 4, seed=1)
    protocols = ({"name": "core.knn", "params": {"k": 3}}, {"name": "core.linear_probe", "params": {"l2_grid": [0.01, 1.0]}})
    cfg = _write(tmp_path / "c.yaml", _eval_config(str(train), str(test), protocols=protocols))
    wd = tmp_path / "wd"
    res = facerep("run", cfg, "--work-dir", wd, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    summary = json.loads((wd / "results.json").read_text())
    results = summary["results"]
    assert [(r["protocol"], r["weights"], r["label"]) for r in results] == [
        ("core.knn", "random init", "expression"), ("core.linear_probe", "random init", "expression")]
    assert results[0]["train"] == "image_folder:train (16/16)" and results[0]["test"] == "image_folder:test (8)"
    assert results[0]["fraction"] == 1.0 and results[0]["primary"] == "acc" and results[0]["n_train"] == 16
    # grey level separates the classes even through random conv features: wiring labels wrongly would not
    assert results[0]["metrics"]["acc"] >= 0.75 and results[1]["metrics"]["acc"] >= 0.75
    assert results[0]["metrics"]["k"] == 3.0 and results[1]["metrics"]["l2"] in (0.01, 1.0)
    subset = json.loads((wd / results[0]["subset"]).read_text())
    assert subset["indices"] == list(range(16)) and subset["dataset"] == "image_folder"
    # per-item outcomes beside each record: one right-or-wrong per test image, reproducing acc
    from facerep.eval.outcomes import load_outcomes

    for r in results:
        items, meta = load_outcomes(wd / r["outcomes"])
        assert len(items) == 8 and set(np.unique(items.num)) <= {0.0, 1.0}
        assert items.metric() == pytest.approx(r["metrics"]["acc"]) and meta == {"test": r["test"], "metric": "acc"}

    table = (wd / "results.md").read_text()
    lines = table.strip().splitlines()
    assert lines[0] == "# baseline"
    assert lines[4] == "| task | weights | protocol | fraction | train images | test | metric | value | seeds | seconds |"
    row = "| image_folder/expression | random init | core.knn | 1 | 16 | image_folder:test (8) | acc ↑ | "
    assert lines[6].startswith(row), lines[6]
    # one seed, but the 8 test images are resampled: the value carries an interval
    assert re.match(r"\d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\] \| 1 \|", lines[6][len(row):]), lines[6]
    assert "Intervals: test items resampled with the seeds" in table
    assert (wd / "plots" / "image_folder_expression.png").is_file()
    summary_table = table.split("\n## Every run")[0].strip()
    assert summary_table.split("## Plots")[0].strip() in res.stdout  # the same summary is printed
    for name in ("config.yaml", "plugins.json", "environment.json"):
        assert (wd / name).is_file(), name
    assert not (wd / "backbone.safetensors").exists()  # nothing was pretrained


@pytest.mark.parametrize("argv, code", [(["run"], 2), (["plugins"], 2), (["list", "--kind", "nope"], 2)])
def test_usage_errors_exit_2(tmp_path, argv, code):
    res = facerep(*argv, cwd=tmp_path)
    assert res.returncode == code and "usage: facerep" in res.stderr


# ---------------------------------------------------------------------------------------------
# facerep eval / report / data check
# ---------------------------------------------------------------------------------------------


def test_eval_runs_fractions_x_seeds_x_protocols_on_exported_weights_and_report_rerenders(tmp_path):
    import torch

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.checkpoint import export_backbone
    from facerep.config import ComponentConfig

    train = _labelled_folders(tmp_path / "faces" / "train", 10, seed=0)
    test = _labelled_folders(tmp_path / "faces" / "test", 4, seed=1)
    torch.manual_seed(0)
    bb = TimmBackbone(TimmBackboneParams(model="resnet10t"))
    export_backbone(bb, tmp_path / "backbone.safetensors", backbone=ComponentConfig("core.timm", {"model": "resnet10t"}), method="none")
    cfg = _eval_config(str(train), str(test))
    cfg["evaluate"] = [dict(cfg["evaluate"][0], protocols=[{"name": "core.frozen_head", "params": {"epochs": 2, "min_steps": 0}}],
                            fractions=[0.2, 1.0], seeds=[0, 1], name="grey")]
    path = _write(tmp_path / "eval.yaml", cfg)
    wd = tmp_path / "wd"
    res = facerep("eval", path, "--weights", tmp_path / "backbone.safetensors", "--work-dir", wd, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    results = json.loads((wd / "results.json").read_text())["results"]
    grid = [(r["protocol"], r["fraction"], r["seed"], r["weights"]) for r in results]
    assert grid == [(p, f, s, "pretrained") for f in (0.2, 1.0) for s in (0, 1) for p in ("core.knn", "core.frozen_head")]
    small = [json.loads((wd / r["subset"]).read_text()) for r in results if r["fraction"] == 0.2]
    assert [s["n"] for s in small] == [4, 4, 4, 4]  # ceil(0.2 * 10) per class, stratified
    assert small[0]["indices"] != small[2]["indices"]  # another seed, another subset
    big = json.loads((wd / results[-1]["subset"]).read_text())
    assert set(small[0]["indices"]) <= set(range(big["n"]))
    md = (wd / "results.md").read_text()
    (wd / "results.md").unlink()
    again = facerep("report", wd, cwd=tmp_path)
    assert again.returncode == 0 and (wd / "results.md").read_text() == md
    assert "| grey | pretrained | core.frozen_head | 0.2 | 4 |" in md and (wd / "plots" / "grey.png").is_file()
    bad = facerep("report", tmp_path, cwd=tmp_path)
    assert bad.returncode == 2 and "no results.json" in bad.stderr


def test_eval_only_splits_a_grid_into_jobs_and_report_merge_joins_them(tmp_path):
    train = _labelled_folders(tmp_path / "faces" / "train", 6, seed=0)
    test = _labelled_folders(tmp_path / "faces" / "test", 3, seed=1)
    knn = ({"name": "core.knn", "params": {"k": 3}}, {"name": "core.knn", "params": {"k": 1}})
    cfg = _eval_config(str(train), str(test), protocols=knn)
    cfg["evaluate"][0]["name"], cfg["evaluate"][1]["name"] = "k3", "k1"
    path = _write(tmp_path / "grid.yaml", cfg)
    for name in ("k1", "k3"):
        res = facerep("eval", path, "--only", name, "--work-dir", tmp_path / name, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        assert {r["name"] for r in json.loads((tmp_path / name / "results.json").read_text())["results"]} == {name}
    res = facerep("report", tmp_path / "all", "--merge", tmp_path / "k1", tmp_path / "k3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    merged = json.loads((tmp_path / "all" / "results.json").read_text())["results"]
    assert sorted(r["name"] for r in merged) == ["k1", "k3"] and all((tmp_path / "all" / r["subset"]).is_file() for r in merged)
    assert "| k1 | random init | core.knn |" in (tmp_path / "all" / "results.md").read_text()
    again = facerep("report", tmp_path / "all", "--merge", tmp_path / "k1", cwd=tmp_path)
    assert again.returncode == 2 and "already holds results.json" in _error_line(again)
    twice = facerep("report", tmp_path / "m2", "--merge", tmp_path / "k1", tmp_path / "k1", cwd=tmp_path)
    assert twice.returncode == 2 and f"is also in {tmp_path / 'k1'}" in _error_line(twice)
    bad = facerep("eval", path, "--only", "k5", "--dry-run", cwd=tmp_path)
    assert bad.returncode == 2 and "no evaluate entry named k5 (entries: k3, k1)" in _error_line(bad)


def test_a_killed_grid_keeps_every_run_it_printed_and_report_merge_reads_them(tmp_path):
    import signal

    train = _labelled_folders(tmp_path / "faces" / "train", 6, seed=0)
    test = _labelled_folders(tmp_path / "faces" / "test", 3, seed=1)
    cfg = _eval_config(str(train), str(test))
    cfg["evaluate"][0].update(name="long", fractions=[0.5, 1.0], seeds=list(range(8)))
    path = _write(tmp_path / "grid.yaml", cfg)
    wd = tmp_path / "killed"
    proc = subprocess.Popen([*FACEREP, "eval", str(path), "--work-dir", str(wd)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    shown = []
    for line in proc.stdout:
        if line.startswith("[eval]"):
            shown.append(line)
            if len(shown) == 2:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and not (wd / "results.json").exists()
    kept = [json.loads(line) for line in (wd / "results.jsonl").read_text().splitlines()]
    assert 2 <= len(kept) < 16 and [(r["fraction"], r["seed"]) for r in kept[:2]] == [(0.5, 0), (0.5, 1)]
    metric = kept[0]["primary"]
    rerun = dict(kept[0], metrics={**kept[0]["metrics"], metric: 0.125})
    with open(wd / "results.jsonl", "a") as fh:
        fh.write(json.dumps(rerun) + "\n")  # the same run again (a resumed `facerep run`): the later record counts
        fh.write('{"name": "long", "proto')  # a record cut off by the kill is dropped, the others are kept
    res = facerep("report", wd, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"unfinished: {len(kept)} runs from results.jsonl" in res.stdout and not (wd / "results.json").exists()
    assert "| long | random init | core.knn | 0.5 | 6 |" in (wd / "results.md").read_text()
    again = facerep("eval", path, "--work-dir", wd, cwd=tmp_path)
    assert again.returncode == 2 and "results.jsonl" in _error_line(again)  # its records are not overwritten unasked
    cfg["evaluate"][0].update(name="short", seeds=[0])
    done = facerep("eval", _write(tmp_path / "short.yaml", cfg), "--work-dir", tmp_path / "short", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = facerep("report", tmp_path / "all", "--merge", wd, tmp_path / "short", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr[-2000:]
    summary = json.loads((tmp_path / "all" / "results.json").read_text())
    assert len(summary["results"]) == len(kept) + 2 and summary["unfinished_sources"] == [str(wd)]
    assert [r["metrics"][metric] for r in summary["results"] if r["name"] == "long" and (r["fraction"], r["seed"]) == (0.5, 0)] == [0.125]
    assert f"unfinished jobs, their records so far: {wd}" in (tmp_path / "all" / "results.md").read_text()
    (wd / "results.jsonl").write_text('{"bad"\n{"name": "x"}\n')
    bad = facerep("report", wd, cwd=tmp_path)
    assert bad.returncode == 2 and "results.jsonl, line 1: not valid JSON" in _error_line(bad)
    (wd / "results.jsonl").write_text(json.dumps(kept[0]) + '\n{"name": "x"}\n')
    bad = facerep("report", wd, cwd=tmp_path)
    assert bad.returncode == 2
    assert "results.jsonl, line 2: not an evaluation record (no protocol, weights, fraction, seed)" in _error_line(bad)


def test_eval_config_errors_name_the_entry(tmp_path):
    cfg = _eval_config("a", "b")
    cfg["evaluate"][0]["fractions"] = [0.0]
    res = facerep("eval", _write(tmp_path / "c.yaml", cfg), "--dry-run", cwd=tmp_path)
    assert res.returncode == 2 and "evaluate.0.fractions: 0.0 is not in (0, 1]" in res.stderr
    cfg = _eval_config("a", "b")
    del cfg["evaluate"][0]["label"]
    res = facerep("eval", _write(tmp_path / "c.yaml", cfg), "--dry-run", cwd=tmp_path)
    assert res.returncode == 2 and "evaluate.0: give a 'task' or a 'label' to classify" in res.stderr


def test_data_check_flags_cross_split_duplicates_and_unreadable_files(tmp_path):
    import shutil

    train = _labelled_folders(tmp_path / "faces" / "train", 5, seed=0)
    test = _labelled_folders(tmp_path / "faces" / "test", 3, seed=1)
    path = _write(tmp_path / "c.yaml", _eval_config(str(train), str(test)))
    ok = facerep("data", "check", path, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"evaluate\.0\.train\s+image_folder:train\s+10\s+0\s+32-32 x 32-32", ok.stdout)
    assert "expression: annotated 10, min 0, max 1, classes 2" in ok.stdout
    shutil.copy(train / "dark" / "2.png", test / "dark" / "leak.png")
    (test / "bright" / "broken.png").write_bytes(b"not a png")
    res = facerep("data", "check", path, cwd=tmp_path)
    assert res.returncode == 1
    assert "1 image(s) of image_folder:train are pixel-identical to images of image_folder:test" in res.stderr
    assert "broken.png" in res.stderr and "1 unreadable file(s)" in res.stderr
    one = facerep("data", "check", "--dataset", "core.image_folder", "-p", f"roots=[{train}]", "-p", "labels=folder", cwd=tmp_path)
    assert one.returncode == 0 and re.search(r"--dataset\s+image_folder:\w+\s+10\s+0", one.stdout)


def test_dry_run_prints_what_the_run_will_cost(tmp_path):
    """The user's path: ``facerep run CONFIG --dry-run`` with a real method (MoCo-v2) on a
    BatchNorm backbone prints parameters (its momentum encoder frozen), FLOPs per step for the
    whole accumulated batch, memory and time, and still writes nothing; ``--no-cost`` skips it."""
    pytest.importorskip("facerep_frl")
    cfg = _write(tmp_path / "c.yaml", {
        "name": "dry", "data": {"name": "core.synthetic", "params": {"n": 32, "size": 40}},
        "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
        "objective": {"name": "frl.moco_v2", "params": {"queue_size": 32, "out_dim": 16, "hidden_dim": 32, "view_size": 32}},
        "train": {"max_steps": 300, "batch_size": 8, "accumulate_steps": 2, "optimizer": {"type": "sgd", "lr": 0.05}}})
    before = sorted(p.name for p in tmp_path.iterdir())
    res = facerep("run", cfg, "--dry-run", "--gpu-tflops", "100", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    frozen = re.search(r"frozen copies\s+([\d,]+)\s+0\n", out)
    backbone = re.search(r"backbone\s+([\d,]+)\s+([\d,]+)\n", out)
    assert frozen and backbone and int(frozen.group(1).replace(",", "")) > int(backbone.group(1).replace(",", ""))
    assert "per process (16 samples: 8 x 2 micro-batches)" in out and "300 steps:" in out
    # any of _duration's forms: "850 ms", "12.3 s", "1 min 5 s" (a loaded or slower host), "1 h 2 min"
    assert re.search(r"time on this host \(cpu, \d+ threads?\): [\d.]+ \w+( \d+ \w+)? for 300 steps", out)
    assert "a GPU of 100 TFLOP/s peak" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    quiet = facerep("run", cfg, "--dry-run", "--no-cost", cwd=tmp_path)
    assert quiet.returncode == 0 and "cost of pretraining" not in quiet.stdout
