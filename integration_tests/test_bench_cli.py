"""``facerep bench`` through the command, with installed methods (FRL's MoCo-v2 and the third-party
VICReg): killed in the middle of the second method's pretraining, the second invocation keeps the
first method's finished work, resumes the second from its checkpoint and completes the leaderboard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("facerep_example_objective")
pytest.importorskip("facerep_frl")

DATA = {"name": "core.synthetic", "params": {"n": 48, "size": 40, "n_identities": 8}}
TRAIN = {"batch_size": 8, "precision": "fp32", "optimizer": {"type": "sgd", "lr": 0.03}, "checkpoint_every": 2, "log_every": 1}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREP_")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    return env


def _write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_bench_killed_mid_pretraining_resumes_without_redoing_finished_work(tmp_path):
    backbone = {"name": "core.timm", "params": {"model": "resnet10t"}}
    moco = _write(tmp_path / "moco.yaml", {"name": "moco", "data": DATA, "backbone": backbone, "train": TRAIN,
                                           "objective": {"name": "frl.moco_v2", "params": {"queue_size": 32, "out_dim": 16,
                                                                                          "hidden_dim": 32, "view_size": 32}}})
    vicreg = _write(tmp_path / "vicreg.yaml", {"name": "vicreg", "data": DATA, "backbone": backbone, "train": TRAIN,
                                               "objective": {"name": "example.vicreg", "params": {"view_size": 32,
                                                                                                 "expander_dims": [64, 64]}}})
    ev = _write(tmp_path / "eval.yaml", {"evaluate": [{
        "name": "synthetic-expression", "label": "expression", "protocol": {"name": "core.knn", "params": {"k": 5}},
        "train": {"name": "core.synthetic", "params": {"n": 64, "size": 40, "n_identities": 8, "seed": 1}},
        "test": {"name": "core.synthetic", "params": {"n": 32, "size": 40, "n_identities": 8, "seed": 2, "split": "test"}},
        "fractions": [0.5], "seeds": [0, 1]}]})
    suite = _write(tmp_path / "suite.yaml", {
        "name": "cli_suite", "budget": {"steps": 8}, "evaluate": ev, "baselines": {"random_init": True, "pixels": []},
        "methods": [{"name": "moco", "config": moco}, {"name": "vicreg", "config": vicreg}]})
    wd = tmp_path / "bench"
    cmd = [sys.executable, "-m", "facerep", "bench", suite, "--work-dir", str(wd)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    try:
        # the second method is training and has recorded a checkpoint (mmengine writes iter_N.pth, then
        # last_checkpoint: a kill between the two leaves nothing to resume, and the bench retrains that row)
        while not list(wd.glob("pretrain/vicreg-*/last_checkpoint")):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    first = next(wd.glob("pretrain/moco-*/backbone.safetensors"))
    stamp = first.stat().st_mtime_ns
    assert not list(wd.glob("pretrain/vicreg-*/backbone.safetensors"))

    res = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert first.stat().st_mtime_ns == stamp, "the finished method was not trained again"
    assert "vicreg: resuming pretraining" in res.stdout and "[bench 1/" in res.stdout
    assert "pretrain moco" not in res.stdout, "moco's pretraining was not redone"
    board = json.loads((wd / "leaderboard.json").read_text())
    assert [r["row"] for r in board["rows"]] == ["moco", "vicreg", "random init"]
    assert all(r["cells"]["synthetic-expression|core.knn|0.5"]["n"] == 2 for r in board["rows"])
    assert board["steps"] == {"moco": 8, "vicreg": 8}
    log = "".join(p.read_text() for p in wd.glob("pretrain/vicreg-*/*/*.log"))
    assert log.count("Iter(train) [1/8]") == 1 and "Iter(train) [8/8]" in log


def test_the_cpu_suite_resolves_every_method_evaluation_and_baseline(tmp_path, capsys):
    from facerep.cli import main

    suite = Path(__file__).resolve().parents[1] / "configs" / "bench" / "cpu_suite.yaml"
    assert main(["bench", str(suite), "--dry-run", "--work-dir", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for row in ("MoCo-v2", "SwAV", "VICReg (example plugin)", "random init", "raw pixels 24x24 grey"):
        assert f"  {row}  " in out
    assert out.count("pretrain ") == 3 and out.count("eval ") == 5
