"""Bad weights, bad work dirs and failed training through ``facerep``: one clear line, a non-zero exit
code, and no input file changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from facerep.cli import main

RUN = {
    "name": "toy",
    "seed": 3,
    "data": {"name": "local.noise"},
    "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
    "objective": {"name": "local.toy", "params": {"crop": 24}},
    "train": {"max_steps": 4, "batch_size": 8, "optimizer": {"type": "sgd", "lr": 0.05}, "checkpoint_every": 2, "channels_last": False},
}
EVAL = {
    "name": "ev",
    "evaluate": [{"label": "expression", "protocol": {"name": "core.knn", "params": {"k": 3}},
                  "train": {"name": "local.noise"}, "test": {"name": "local.noise", "params": {"seed": 1}}}],
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _fails(capsys, argv: list[object], code: int, *needles: str) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err and err.count("facerep: error:") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def weights(tmp_path) -> Path:
    """A real exported backbone (resnet10t) with its sidecar."""
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.checkpoint import export_backbone
    from facerep.config import ComponentConfig

    torch.manual_seed(0)
    return export_backbone(TimmBackbone(TimmBackboneParams(model="resnet10t")), tmp_path / "w" / "backbone.safetensors",
                           backbone=ComponentConfig("core.timm", {"model": "resnet10t"}), method="test")


def _damage(weights: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    side = weights.with_suffix(".json")
    if how == "shape":
        state = load_file(weights)
        key = next(k for k in state if k.endswith("conv1.0.weight"))
        state[key] = torch.zeros(3, 3, 3, 3)
        save_file(state, weights)
    elif how == "missing":
        state = load_file(weights)
        state.pop("model.layer4.0.downsample.2.running_var")
        save_file(state, weights)
    elif how == "sidecar":
        meta = json.loads(side.read_text())
        meta["backbone"]["params"]["model"] = "resnet18"
        side.write_text(json.dumps(meta))
    elif how == "sidecar_format":
        side.write_text(json.dumps(["not", "a", "sidecar"]))
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "pickle":
        torch.save({"a": torch.zeros(2)}, weights)  # a torch pickle where safetensors are expected


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("shape", "weights do not fit the backbone its sidecar names"),
        ("missing", "missing model.layer4.0.downsample.2.running_var"),
        ("sidecar", "weights do not fit the backbone its sidecar names (core.timm {'model': 'resnet18'})"),
        ("sidecar_format", "unknown format 'list'"),
        ("truncated", "not a readable safetensors file"),
        ("pickle", "not a readable safetensors file"),
    ],
)
def test_eval_with_bad_weights_is_one_clear_error(tmp_path, capsys, local_plugins, weights, how, needle):
    _damage(weights, how)
    before = {p: p.read_bytes() for p in weights.parent.iterdir()}
    cfg = _write(tmp_path / "ev.yaml", EVAL)
    _fails(capsys, ["eval", cfg, "--weights", weights, "--work-dir", tmp_path / "out"], 3, str(weights.parent), needle)
    assert {p: p.read_bytes() for p in weights.parent.iterdir()} == before
    assert not (tmp_path / "out" / "config.yaml").exists(), "a run that fails to start writes no record"


def test_eval_with_good_weights_works_and_refuses_to_overwrite_its_results(tmp_path, capsys, local_plugins, weights):
    cfg = _write(tmp_path / "ev.yaml", EVAL)
    assert main(["eval", str(cfg), "--weights", str(weights), "--work-dir", str(tmp_path / "out")]) == 0
    results = (tmp_path / "out" / "results.json").read_bytes()
    _fails(capsys, ["eval", cfg, "--weights", weights, "--work-dir", tmp_path / "out"], 2, "already holds a run", "--overwrite")
    assert (tmp_path / "out" / "results.json").read_bytes() == results
    assert main(["eval", str(cfg), "--weights", str(weights), "--work-dir", str(tmp_path / "out"), "--overwrite"]) == 0


def test_work_dir_under_a_file(tmp_path, capsys, local_plugins):
    cfg = _write(tmp_path / "run.yaml", RUN)
    (tmp_path / "afile").write_text("keep me")
    _fails(capsys, ["run", cfg, "--work-dir", tmp_path / "afile" / "wd"], 2, f"{tmp_path / 'afile'} is a file")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_resume_with_no_run_and_stop_after_zero(tmp_path, capsys, local_plugins):
    cfg = _write(tmp_path / "run.yaml", RUN)
    _fails(capsys, ["run", cfg, "--work-dir", tmp_path / "wd", "--resume"], 2, "holds no run to resume")
    _fails(capsys, ["run", cfg, "--work-dir", tmp_path / "wd", "--stop-after", "0"], 2, "--stop-after: must be a step >= 1")
    assert not list((tmp_path / "wd").glob("*.pth"))


def test_a_run_killed_before_its_first_checkpoint_cannot_resume(tmp_path, capsys, local_plugins):
    cfg = _write(tmp_path / "run.yaml", RUN)
    wd = tmp_path / "wd"
    assert main(["run", str(cfg), "--work-dir", str(wd), "--stop-after", "2"]) == 0
    for p in wd.glob("iter_*.pth"):  # as if it had died during step 1
        p.unlink()
    (wd / "last_checkpoint").unlink()
    _fails(capsys, ["run", cfg, "--work-dir", wd, "--resume"], 2, "no checkpoint to resume", "run without --resume")


def test_non_finite_loss_keeps_the_last_checkpoint(tmp_path, capsys, local_plugins):
    cfg = _write(tmp_path / "run.yaml", {**RUN, "train": {**RUN["train"], "max_steps": 6, "optimizer": {"type": "sgd", "lr": 1e30}}})
    wd = tmp_path / "wd"
    err = _fails(capsys, ["run", cfg, "--work-dir", wd], 7, "non-finite loss", "lower train.optimizer.lr")
    step = int(err.split("at step ")[1].split(";")[0])
    ckpts = sorted(wd.glob("iter_*.pth"))
    assert all(torch.load(p, weights_only=True)["meta"]["iter"] < step for p in ckpts)
    assert not (wd / "backbone.safetensors").exists()


def test_resume_from_a_checkpoint_of_another_model_is_refused(tmp_path, capsys, local_plugins):
    other = _write(tmp_path / "other.yaml", {**RUN, "objective": {"name": "local.toy", "params": {"crop": 24, "out_dim": 8}}})
    assert main(["run", str(other), "--work-dir", str(tmp_path / "a"), "--stop-after", "2"]) == 0
    cfg = _write(tmp_path / "run.yaml", RUN)
    assert main(["run", str(cfg), "--work-dir", str(tmp_path / "b"), "--stop-after", "2"]) == 0
    capsys.readouterr()
    foreign = tmp_path / "a" / "iter_2.pth"
    before = foreign.read_bytes(), (tmp_path / "b" / "iter_2.pth").read_bytes()
    _fails(capsys, ["run", cfg, "--work-dir", tmp_path / "b", "--resume", foreign], 3, "does not fit this run's model", "objective.")
    assert (foreign.read_bytes(), (tmp_path / "b" / "iter_2.pth").read_bytes()) == before


def test_an_evaluation_never_replaces_a_pretraining_run(tmp_path, capsys, local_plugins):
    run_cfg = _write(tmp_path / "run.yaml", RUN)
    wd = tmp_path / "wd"
    assert main(["run", str(run_cfg), "--work-dir", str(wd)]) == 0
    before = {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()}
    ev = _write(tmp_path / "ev.yaml", EVAL)
    for extra in ([], ["--overwrite"]):
        _fails(capsys, ["eval", ev, "--weights", wd / "backbone.safetensors", "--work-dir", wd, *extra], 2,
               "holds a pretraining run", "another --work-dir")
    assert {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()} == before
