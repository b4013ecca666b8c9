"""Exact resume through the user's path: the ``facerep`` command, a real method (FRL's MoCo-v2), a
BatchNorm backbone (ResNet-18). Every tensor of the exported backbone and of the last checkpoint
(model, optimizer, schedulers) must equal the uninterrupted run's, bit for bit — after
``--stop-after`` + ``--resume`` and after a SIGKILL mid-step or mid-checkpoint-write."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from facerep.cli import main

CONFIG = {
    "name": "moco_resume",
    "seed": 5,
    "data": {"name": "core.synthetic", "params": {"n": 48, "size": 40, "n_identities": 8}},
    "backbone": {"name": "core.timm", "params": {"model": "resnet18"}},
    "objective": {"name": "frl.moco_v2", "params": {"queue_size": 32, "momentum": 0.9, "out_dim": 16, "hidden_dim": 32, "view_size": 32}},
    "train": {
        "max_steps": 6,
        "batch_size": 8,
        "precision": "fp32",
        "optimizer": {"type": "sgd", "lr": 0.05, "weight_decay": 1e-4},
        "schedule": {"warmup_steps": 2, "final_weight_decay": 1e-3},
        "log_every": 1,
        "checkpoint_every": 2,
        "channels_last": True,
        "log_backends": ["tensorboard"],
    },
    "required_plugins": ["facerep-frl"],
}


def _env() -> dict[str, str]:
    # FACEREP_CPU_BF16 passes: the bf16 case sets it to train bf16 on CPUs without bf16 kernels
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREP_") or k == "FACEREP_CPU_BF16"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def facerep(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facerep", *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)


def _same(a: Any, b: Any, where: str = "") -> None:
    """Recursive bit-for-bit equality of tensors, containers and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: max abs diff {(a.double() - b.double()).abs().max().item()}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}.{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _assert_identical_runs(ref: Path, other: Path, forwards: int = 6) -> None:
    a, b = load_file(ref / "backbone.safetensors"), load_file(other / "backbone.safetensors")
    _same(a, b, "backbone")
    bn = [k for k in a if k.endswith("num_batches_tracked")]
    assert bn and all(int(a[k]) == forwards for k in bn), f"BatchNorm saw each of the {forwards} forwards exactly once"
    ca = torch.load(ref / "iter_6.pth", weights_only=True)
    cb = torch.load(other / "iter_6.pth", weights_only=True)
    assert ca["meta"]["iter"] == cb["meta"]["iter"] == 6
    for key in ("state_dict", "optimizer", "param_schedulers"):
        _same(ca[key], cb[key], key)
    assert ca["optimizer"]["state"], "SGD momentum buffers are compared"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """The config and an uninterrupted 6-step run of it."""
    root = tmp_path_factory.mktemp("resume")
    cfg = root / "moco.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    res = facerep("run", cfg, "--work-dir", root / "full", cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_terminal_and_tensorboard(res, root / "full")
    return cfg, root / "full"


def _check_terminal_and_tensorboard(res: subprocess.CompletedProcess[str], wd: Path) -> None:
    """What the user sees: components, progress lines, no mmengine environment dump (it is in the
    work dir's log); and the TensorBoard switch writes event files with the loss at every step."""
    terminal = res.stdout + res.stderr
    assert "System environment" not in terminal and "Hooks will be executed" not in terminal
    assert "frl.moco_v2" in res.stdout and "step 6/6" in res.stdout and "img/s" in res.stdout and "z_std" in res.stdout
    assert len(terminal.splitlines()) < 40, terminal
    assert "System environment" in "".join(p.read_text() for p in wd.glob("*/*.log"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(wd / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4, 5, 6]


def test_stop_after_then_resume_is_bit_identical(reference, tmp_path):
    cfg, full = reference
    wd = tmp_path / "part"
    res = facerep("run", cfg, "--work-dir", wd, "--stop-after", 3, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (wd / "backbone.safetensors").exists()
    ckpt = torch.load(wd / "iter_3.pth", weights_only=True)
    assert ckpt["meta"]["iter"] == 3, "the checkpoint after step 3 records step 3"
    assert (wd / "last_checkpoint").read_text() == "iter_3.pth", "named relative to the work dir"
    # the printed command continues with the run's own resolved config
    cont = next(line for line in res.stdout.splitlines() if "continue with" in line).split("continue with: ")[1].split()
    assert cont[:3] == ["facerep", "run", str(wd / "config.yaml")] and "--resume" in cont
    res = facerep(*cont[1:], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    log = "".join(p.read_text() for p in wd.glob("*/*.log"))
    assert "Iter(train) [4/6]" in log and log.count("Iter(train) [3/6]") == 1, "step 3 is trained once, step 4 next"
    _assert_identical_runs(full, wd)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import facerep.engine.model as model, facerep.workdir as workdir
    mode, at = sys.argv[1], int(sys.argv[2])
    if mode == "step":   # die inside training step `at` (1-based), after its forward and backward
        original = model._train_step
        def step(m, caller, data, ow):
            from mmengine.logging import MessageHub
            if int(MessageHub.get_current_instance().get_info("iter")) + 1 == at:
                views, extras = m.prepare(data)
                out = caller(views, mode="loss"); out["loss"].backward()
                os.kill(os.getpid(), signal.SIGKILL)
            return original(m, caller, data, ow)
        model._train_step = step
    else:                # die while checkpoint iter_<at>.pth is being written: half the bytes on disk
        original = workdir.os.replace
        def replace(src, dst):
            if str(dst).endswith(f"iter_{at}.pth"):
                with open(src, "r+b") as fh:
                    fh.truncate(os.path.getsize(src) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(src, dst)
        workdir.os.replace = replace
    from facerep.cli import main
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.parametrize("mode", ["step", "checkpoint"])
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path, mode):
    cfg, full = reference
    wd = tmp_path / "killed"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    res = subprocess.run([sys.executable, str(killer), mode, "5" if mode == "step" else "4", "run", str(cfg), "--work-dir", str(wd)],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == -9, res.stderr[-3000:]
    assert not (wd / "backbone.safetensors").exists()
    assert (wd / "last_checkpoint").read_text() == "iter_2.pth" if mode == "checkpoint" else "iter_4.pth"
    if mode == "checkpoint":
        assert not (wd / "iter_4.pth").exists() and list(wd.glob(".iter_4.pth.tmp-*")), "the half-written file never became a checkpoint"
    res = facerep("run", cfg, "--work-dir", wd, "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not list(wd.glob(".*.tmp-*")), "stale temporary files are cleaned up"
    _assert_identical_runs(full, wd)


# ---------------------------------------------------------------------------------------------
# gradient accumulation: 2 micro-batches per step, fp16 with its loss scaler / bf16
# ---------------------------------------------------------------------------------------------

KILL_BETWEEN_MICRO_BATCHES = textwrap.dedent("""
    import os, signal, sys
    from facerep_frl.moco import MoCoV2Objective
    at = int(sys.argv[1])
    original = MoCoV2Objective.after_micro_batch
    def after_micro_batch(self, step, micro, n_micro):
        original(self, step, micro, n_micro)
        if step + 1 == at and micro == 0:   # step `at` (1-based): micro-batch 1 done, its keys enqueued
            os.kill(os.getpid(), signal.SIGKILL)
    MoCoV2Objective.after_micro_batch = after_micro_batch
    from facerep.cli import main
    sys.exit(main(sys.argv[2:]))
""")


# fp16 (58 s) is in the slow tier: its loss-scaler state is checked in core/tests/test_optim.py
@pytest.mark.parametrize("precision", [pytest.param("fp16", marks=pytest.mark.slow), "bf16"])
def test_accumulated_run_resumes_bit_identical(tmp_path, precision, monkeypatch):
    """accumulate_steps 2 (batch 4 x 2 = the reference's 8 per step): stopped after step 3 (fp16,
    loss-scaler state in the checkpoint) or killed between the two micro-batches of step 4 (bf16),
    then resumed, the run ends bit-identical to the uninterrupted one; BatchNorm saw 12 forwards."""
    monkeypatch.setenv("FACEREP_CPU_BF16", "emulated")  # bf16 autocast even on a CPU without bf16 kernels
    cfg_data = {**CONFIG, "train": {**CONFIG["train"], "batch_size": 4, "accumulate_steps": 2, "precision": precision,
                                    "log_backends": []}}
    cfg = tmp_path / "moco_accumulated.yaml"
    cfg.write_text(yaml.safe_dump(cfg_data, sort_keys=False))
    res = facerep("run", cfg, "--work-dir", tmp_path / "full", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"global batch 8 (1 x 4 x 2 micro-batches), peak lr 0.05, 6 steps, device cpu, {precision}" in res.stdout
    wd = tmp_path / "part"
    if precision == "fp16":
        res = facerep("run", cfg, "--work-dir", wd, "--stop-after", 3, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        ckpt = torch.load(wd / "iter_3.pth", weights_only=True)
        assert ckpt["optimizer"]["loss_scaler"]["scale"] > 0, "the loss scaler's state is checkpointed"
    else:
        killer = tmp_path / "killer.py"
        killer.write_text(KILL_BETWEEN_MICRO_BATCHES)
        res = subprocess.run([sys.executable, str(killer), "4", "run", str(cfg), "--work-dir", str(wd)], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == -9, res.stderr[-3000:]
        assert (wd / "last_checkpoint").read_text() == "iter_2.pth"
    res = facerep("run", cfg, "--work-dir", wd, "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_identical_runs(tmp_path / "full", wd, forwards=12)


# ---------------------------------------------------------------------------------------------
# resume refusals and lost-data guards (in-process CLI: exit code + one clear message)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def stopped(reference, tmp_path) -> tuple[Path, Path]:
    """A copy of the reference run's work dir as it was after step 4 (a session that stopped)."""
    cfg, full = reference
    wd = tmp_path / "stopped"
    wd.mkdir()
    for name in ("config.yaml", "plugins.json", "environment.json", "iter_4.pth"):
        shutil.copy(full / name, wd / name)
    (wd / "last_checkpoint").write_text("iter_4.pth")
    return cfg, wd


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _fails(capsys, argv: list[str], code: int, *needles: str) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_resume_with_a_different_config_is_refused_naming_the_fields(stopped, capsys):
    cfg, wd = stopped
    before = _snapshot(wd)
    _fails(capsys, ["run", cfg, "--work-dir", wd, "--resume", "-o", "train.optimizer.lr=0.1", "-o", "backbone.params.model=resnet10t"],
           2, "train.optimizer.lr: 0.05 -> 0.1", "backbone.params.model: 'resnet18' -> 'resnet10t'",
           f"facerep run {wd / 'config.yaml'} --resume")
    assert _snapshot(wd) == before


def test_resume_reads_only_the_given_work_dir(stopped, tmp_path, capsys):
    cfg, _ = stopped
    empty = tmp_path / "other"
    _fails(capsys, ["run", cfg, "--work-dir", empty, "--resume"], 2, f"{empty} holds no run to resume")
    assert not list(empty.glob("*.pth")) and not (empty / "config.yaml").exists()


def test_resume_with_another_number_of_processes_is_refused(stopped, capsys):
    """batch_size is per process: resuming a run on another world size would change its global
    batch mid-run; the checkpoint records the world size and the resume names both."""
    cfg, wd = stopped
    ckpt = torch.load(wd / "iter_4.pth", weights_only=True)
    assert ckpt["meta"]["world_size"] == 1
    ckpt["meta"]["world_size"] = 2
    torch.save(ckpt, wd / "iter_4.pth")
    before = _snapshot(wd)
    _fails(capsys, ["run", cfg, "--work-dir", wd, "--resume"], 2, "written by a run of 2 process(es), this one has 1",
           "the global batch would change from 16 to 8")
    assert _snapshot(wd) == before


@pytest.mark.parametrize(
    ("damage", "code", "needle"),
    [
        ("truncate", 3, "truncated or not a torch checkpoint"),
        ("pickle", 3, "not a facerep checkpoint: contains pickled code"),
        ("empty_marker", 3, "last_checkpoint: empty"),
        ("moved", 3, "names iter_4.pth, which is not in"),
        ("no_marker", 2, "no checkpoint to resume"),
    ],
)
def test_damaged_checkpoints_give_one_clear_error(stopped, capsys, damage, code, needle):
    cfg, wd = stopped
    ckpt = wd / "iter_4.pth"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    elif damage == "pickle":
        torch.save({"meta": {"iter": 4}, "state_dict": {}, "payload": Path("/etc/passwd")}, ckpt)
    elif damage == "empty_marker":
        (wd / "last_checkpoint").write_text("")
    elif damage == "moved":
        ckpt.rename(wd / "elsewhere.pth")
    else:
        (wd / "last_checkpoint").unlink()
    before = _snapshot(wd)
    _fails(capsys, ["run", cfg, "--work-dir", wd, "--resume"], code, needle)
    assert _snapshot(wd) == before, "a failed resume changes nothing in the work dir"


def test_a_copied_work_dir_resumes_from_its_own_checkpoint(stopped, reference, tmp_path, capsys):
    cfg, wd = stopped
    (wd / "last_checkpoint").write_text(str(wd / "iter_4.pth"))  # an absolute path, as older versions wrote
    copy = tmp_path / "copy"
    shutil.copytree(wd, copy)
    (wd / "iter_4.pth").unlink()  # the original's checkpoint is gone: the copy must not need it
    before = _snapshot(wd)
    assert main(["run", str(cfg), "--work-dir", str(copy), "--resume"]) == 0, capsys.readouterr().err
    assert torch.load(copy / "iter_6.pth", weights_only=True)["meta"]["iter"] == 6
    log = "".join(p.read_text() for p in copy.glob("*/*.log"))
    assert "Iter(train) [5/6]" in log and "Iter(train) [4/6]" not in log, "resumed from the copy's own iter_4.pth"
    assert _snapshot(wd) == before and not list(wd.glob("*.pth")), "nothing was written to the original"


def test_a_finished_work_dir_is_not_overwritten(reference, tmp_path, capsys):
    cfg, full = reference
    wd = tmp_path / "done"
    shutil.copytree(full, wd)
    before = _snapshot(wd)
    _fails(capsys, ["run", cfg, "--work-dir", wd], 2, "already holds a run", "--resume", "--overwrite")
    assert _snapshot(wd) == before
    # a config that fails before training leaves the finished run's files as they were, even with --overwrite
    _fails(capsys, ["run", cfg, "--work-dir", wd, "--overwrite", "-o", "objective.params.view_size=0"], 2,
           "objective.params.view_size: must be positive")
    assert _snapshot(wd) == before


def test_a_locked_work_dir_is_refused(reference, tmp_path):
    cfg, _ = reference
    wd = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from facerep.workdir import lock_work_dir, make_work_dir
        lock_work_dir(make_work_dir(Path({str(wd)!r}))); print("locked", flush=True); time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = facerep("run", cfg, "--work-dir", wd, cwd=tmp_path)
        assert res.returncode == 6 and f"in use by another facerep run (pid {holder.pid})" in res.stderr, res.stderr[-2000:]
        assert not (wd / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
