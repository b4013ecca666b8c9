"""``facerep run --overwrite`` over a finished run keeps the old run's files (moved aside) until the
new run has a checkpoint: a new run that fails before that gives them back, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from facerep.cli import main
from facerep.workdir import PREVIOUS_PREFIX, previous_runs, set_aside_run, settle_previous

RUN = {
    "name": "toy",
    "seed": 3,
    "data": {"name": "local.noise"},
    "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
    "objective": {"name": "local.toy", "params": {"crop": 24}},
    "train": {"max_steps": 2, "batch_size": 8, "optimizer": {"type": "sgd", "lr": 0.05}, "checkpoint_every": 1, "channels_last": False},
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _files(wd: Path) -> dict[str, bytes]:
    """The work dir's files (not the mmengine log folders nor the lock)."""
    return {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file() and p.name != ".facerep.lock"}


@pytest.fixture
def finished(tmp_path, local_plugins, capsys) -> tuple[Path, dict[str, bytes]]:
    wd = tmp_path / "wd"
    assert main(["run", str(_write(tmp_path / "run.yaml", RUN)), "--work-dir", str(wd)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    files = _files(wd)
    assert {"backbone.safetensors", "iter_2.pth", "last_checkpoint", "config.yaml"} <= set(files)
    return wd, files


def _faces(folder: Path, corrupt: str | None) -> Path:
    """Seven small images; ``corrupt``: one more file of that name that is not an image."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        cv2.imwrite(str(folder / f"{i:02d}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    if corrupt:
        (folder / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 20)
    return folder


def _folder_run(tmp_path: Path, corrupt: str | None) -> Path:
    faces = _faces(tmp_path / ("bad" if corrupt else "good"), corrupt)
    data = {"name": "core.image_folder", "params": {"roots": [str(faces)]}}
    return _write(tmp_path / "new.yaml", {**RUN, "name": "new", "data": data})


def test_a_failed_overwrite_gives_the_old_run_back(finished, tmp_path, capsys):
    wd, before = finished
    cfg = _folder_run(tmp_path, corrupt="07_bad.png")  # a batch of 8 from 8 files reads them all
    rc = main(["run", str(cfg), "--work-dir", str(wd), "--overwrite"])
    out, err = capsys.readouterr()
    assert rc == 3, err
    assert "Traceback" not in err and err.count("facerep: error:") == 1, err
    error = next(line for line in err.splitlines() if "facerep: error:" in line)
    assert "07_bad.png" in error and "cannot decode image" in error, err
    assert f"kept in {wd / PREVIOUS_PREFIX}" in out, "the moved-aside folder is named when the run starts"
    assert "restored the run that --overwrite was to replace" in err
    assert _files(wd) == before, "the old backbone, checkpoints and record are back, bit for bit"
    assert not previous_runs(wd)
    # and the work dir is still the old run's: refused without --overwrite, resumable as it was
    assert main(["run", str(cfg), "--work-dir", str(wd)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_successful_overwrite_leaves_nothing_aside(finished, tmp_path, capsys):
    wd, before = finished
    cfg = _folder_run(tmp_path, corrupt=None)
    assert main(["run", str(cfg), "--work-dir", str(wd), "--overwrite"]) == 0, capsys.readouterr().err
    assert not previous_runs(wd) and not list(wd.glob(PREVIOUS_PREFIX + "*"))
    after = _files(wd)
    assert yaml.safe_load(after["config.yaml"])["name"] == "new"
    assert after["backbone.safetensors"] != before["backbone.safetensors"]
    assert set(after) == set(before)


def test_an_overwrite_stopped_at_a_checkpoint_drops_the_old_run(finished, tmp_path, capsys):
    wd, _ = finished
    cfg = _folder_run(tmp_path, corrupt=None)
    assert main(["run", str(cfg), "--work-dir", str(wd), "--overwrite", "--stop-after", "1"]) == 0, capsys.readouterr().err
    assert "the new run has a checkpoint" in capsys.readouterr().out
    assert not previous_runs(wd) and not (wd / "backbone.safetensors").exists() and not (wd / "iter_2.pth").exists()
    assert (wd / "last_checkpoint").read_text() == "iter_1.pth"


def test_a_killed_overwrite_is_undone_by_the_next_run(finished, tmp_path, capsys):
    """SIGKILL after the files went aside and before a checkpoint: the next run puts them back first."""
    wd, before = finished
    aside = set_aside_run(wd)  # what the killed run did as it started ...
    (wd / "config.yaml").write_text("name: killed\n")  # ... and the record it wrote
    (wd / "plugins.json").write_text("[]")
    cfg = _folder_run(tmp_path, corrupt=None)
    assert main(["run", str(cfg), "--work-dir", str(wd)]) == 2
    err = capsys.readouterr().err
    assert f"restored the run that --overwrite was to replace from {aside}" in err
    assert "already holds a run" in err, "the restored run is protected again"
    assert _files(wd) == before and not aside.exists()


def test_a_killed_overwrite_with_a_checkpoint_drops_the_old_run(finished):
    wd, _ = finished
    aside = set_aside_run(wd)
    (wd / "config.yaml").write_text("name: killed\n")
    (wd / "iter_1.pth").write_bytes(b"new checkpoint")
    (wd / "last_checkpoint").write_text("iter_1.pth")
    assert settle_previous(wd) == [f"deleted {aside}, the run that --overwrite replaced: the new run has a checkpoint"]
    assert not aside.exists() and (wd / "iter_1.pth").read_bytes() == b"new checkpoint"
    assert "iter_2.pth" not in _files(wd)


@pytest.mark.parametrize("moved", [0, 3, "all_but_last", "all"])
def test_a_set_aside_or_restore_cut_short_is_completed(finished, moved):
    """A crash in the middle of moving files (either way) never loses one and never reads as a
    checkpoint of the new run."""
    wd, before = finished
    aside = set_aside_run(wd)
    names = json.loads((aside / "moved.json").read_text())
    back = {0: [], 3: names[:3], "all_but_last": [n for n in names if n != "last_checkpoint"], "all": names}[moved]
    for name in back:  # as if the restore (or the set-aside, seen backwards) stopped here
        (aside / name).replace(wd / name)
    assert settle_previous(wd)[0].startswith("restored")
    assert _files(wd) == before and not previous_runs(wd)


def test_a_folder_killed_before_it_recorded_anything_is_removed(tmp_path):
    wd = tmp_path / "wd"
    (wd / f"{PREVIOUS_PREFIX}20250101_000000").mkdir(parents=True)
    assert settle_previous(wd) == [] and not previous_runs(wd)
    odd = wd / f"{PREVIOUS_PREFIX}20250101_000001"
    odd.mkdir()
    (odd / "mine.txt").write_text("a user's file")
    assert "left as it is" in settle_previous(wd)[0] and (odd / "mine.txt").exists()


def test_the_old_run_goes_at_the_new_runs_first_checkpoint(finished, tmp_path, capsys):
    """Not at the end: once the new run can be resumed on its own (its first checkpoint, after step
    1 here), the set-aside run is deleted, before step 2 trains; a failure after that keeps the new
    run's checkpoint."""
    wd, _ = finished
    cfg = _folder_run(tmp_path, corrupt=None)
    data = yaml.safe_load(cfg.read_text())
    data["train"]["log_every"] = 1
    _write(cfg, data)
    assert main(["run", str(cfg), "--work-dir", str(wd), "--overwrite"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.index("the new run has a checkpoint") < out.index("step 2/2"), out
    assert not previous_runs(wd)
