"""Terminal output of a run: progress line, quiet mmengine logger, visualisation backends."""

from __future__ import annotations

import itertools
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import IterBasedTrainLoop, Runner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from facerep.engine import progress
from facerep.engine.progress import ProgressHook, quiet_terminal, visualizer_cfg
from facerep.errors import ConfigError

_NAMES = itertools.count()  # mmengine keys loggers and visualizers by experiment name (+ second)
STEPS = 6


class Tiny(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, data_samples=None, mode: str = "loss") -> dict[str, torch.Tensor]:
        z = self.lin(x)
        return {"loss": (z**2).mean(), "z_std": z.detach().std(0).mean()}

    def train_step(self, data, optim_wrapper) -> dict[str, torch.Tensor]:
        out = self(data[0])
        optim_wrapper.update_params(out["loss"])
        warnings.warn("facerep-test: this API is going away", FutureWarning, stacklevel=1)  # a deprecation the run triggers
        return {"loss": out["loss"].detach(), "z_std": out["z_std"]}


def _collate(batch):
    return [torch.stack([t[0] for t in batch])]


def _train(work_dir: Path, *, verbose: bool = False, hooks=(), visualizer=None, log_every: int = 2) -> Runner:
    torch.manual_seed(0)
    model = Tiny()
    data = TensorDataset(torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))
    loader = DataLoader(data, batch_size=4, shuffle=False, collate_fn=_collate)
    with quiet_terminal(verbose):
        runner = Runner(
            model=model,
            work_dir=str(work_dir),
            experiment_name=f"progress_test_{next(_NAMES)}",
            train_dataloader=loader,
            train_cfg=dict(type=IterBasedTrainLoop, max_iters=STEPS),
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
            default_hooks=dict(logger=dict(type="LoggerHook", interval=log_every), checkpoint=None),
            custom_hooks=list(hooks),
            visualizer=visualizer,
            randomness=dict(seed=0),
            log_level="INFO",
        )
        runner.train()
    return runner


def _log_text(runner: Runner) -> str:
    return Path(runner.logger.log_file).read_text()


def test_quiet_terminal_shows_progress_only_and_keeps_the_full_log(tmp_path, capfd):
    runner = _train(tmp_path / "wd", hooks=[ProgressHook(every=4)])
    out, err = capfd.readouterr()
    terminal = out + err
    lines = [ln for ln in out.splitlines() if ln.startswith("step ")]
    # not a TTY: a plain line every 4 steps and at the last step, no carriage returns
    assert [ln.split()[1] for ln in lines] == ["4/6", "6/6"], out
    assert "\r" not in out
    assert "loss " in lines[0] and "z_std " in lines[0] and "(mean of " in lines[0]
    assert "img/s" in lines[0] and "elapsed " in lines[0] and "eta " in lines[0]
    assert "eta " not in lines[-1]  # nothing left at the end
    assert f"full log: {runner.logger.log_file}" in out
    for noise in ("System environment", "Runtime environment", "Hooks will be executed", "FileClient", "facerep-test:", "(train) ["):
        assert noise not in terminal, noise
    log = _log_text(runner)
    assert Path(runner.logger.log_file).parent.parent == tmp_path / "wd"  # <work_dir>/<timestamp>/<timestamp>.log
    kept = ("System environment", "Runtime environment", "Hooks will be executed", "(train) [", "facerep-test: this API is going away")
    for text in kept:
        assert text in log, text


def test_verbose_brings_mmengine_output_back(tmp_path, capfd):
    with pytest.warns(FutureWarning, match="facerep-test"):  # warnings are left alone too
        _train(tmp_path / "wd", verbose=True, hooks=[ProgressHook(every=2, bar=False)])
    out, _ = capfd.readouterr()
    assert "System environment" in out and "Runtime environment" in out and "Hooks will be executed" in out
    assert "(train) [" in out and "step 6/6" in out


class WarnAt(Hook):
    def __init__(self, step: int) -> None:
        self.step = step

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.step:
            runner.logger.warning("facerep-test: heads up")


def test_progress_bar_rewrites_one_line_on_a_tty(tmp_path, capfd):
    _train(tmp_path / "wd", hooks=[ProgressHook(every=100, bar=True, show_log_file=False), WarnAt(3)])
    out, _ = capfd.readouterr()
    assert out.count("\r") == STEPS and out.endswith("\n")
    lines = out.split("\n")
    # the warning ends the open progress line instead of running into it
    assert len(lines) == 4 and "heads up" in lines[1] and "step" not in lines[1], lines
    assert lines[0].rsplit("\r", 1)[-1].startswith("step 2/6") and lines[2].rsplit("\r", 1)[-1].startswith("step 6/6")


def test_only_rank_zero_prints(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(progress, "get_rank", lambda: 1)
    _train(tmp_path / "wd", hooks=[ProgressHook(every=1)])
    out, _ = capfd.readouterr()
    assert "step " not in out and "full log" not in out


def test_tty_detection_follows_stdout(monkeypatch):
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    assert ProgressHook()._tty() and not ProgressHook(bar=False)._tty()


@pytest.mark.filterwarnings("ignore:facerep-test")
def test_progress_and_tensorboard_draw_no_random_numbers(tmp_path):
    pytest.importorskip("tensorboard")
    plain = _train(tmp_path / "plain", verbose=True)
    rng_plain = torch.get_rng_state()
    shown = _train(tmp_path / "shown", hooks=[ProgressHook(every=1)], visualizer=visualizer_cfg(("tensorboard",), tmp_path / "shown"))
    assert torch.equal(torch.get_rng_state(), rng_plain)
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), shown.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_tensorboard_backend_writes_loss_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wd = tmp_path / "wd"
    _train(wd, visualizer=visualizer_cfg(("tensorboard",), wd), log_every=2)
    events = list((wd / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(wd) for p in wd.rglob("*"))
    acc = EventAccumulator(str(wd / "tensorboard"))
    acc.Reload()
    assert {"loss", "z_std", "lr"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == [2, 4, 6]
    assert all(e.value > 0 for e in acc.Scalars("loss"))
    assert list(wd.glob("*/vis_data/scalars.json"))  # mmengine's local backend is kept


def test_no_backends_keeps_mmengine_default():
    assert visualizer_cfg((), "wd") is None


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        visualizer_cfg(("tensorboard", "mlflow"), "wd")
    msg = str(err.value)
    assert "train.log_backends" in msg and "'mlflow'" in msg and "tensorboard" in msg and "wandb" in msg


def test_wandb_config_without_importing_wandb(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "_installed", lambda name: True)
    cfg = visualizer_cfg(("tensorboard", "wandb"), tmp_path, run_name="toy")
    assert cfg["type"] == "Visualizer"
    assert [b["type"] for b in cfg["vis_backends"]] == ["LocalVisBackend", "TensorboardVisBackend", "WandbVisBackend"]
    wandb = cfg["vis_backends"][2]
    assert wandb["save_dir"] == str(tmp_path / "wandb") and wandb["init_kwargs"] == {"project": "facerep", "name": "toy"}
    assert "wandb" not in sys.modules


def test_missing_backend_package_is_a_config_error(monkeypatch):
    monkeypatch.setattr(progress, "_installed", lambda name: False)
    with pytest.raises(ConfigError, match=r"train\.log_backends: 'wandb' needs the wandb package"):
        visualizer_cfg(("wandb",), "wd")
