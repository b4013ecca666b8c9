"""The reference tables in docs/reference.md are generated from the config classes; they must not drift."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reference_tables_match_the_config_classes():
    from facerep.config import RunConfig, structure

    script = runpy.run_path(str(ROOT / "scripts" / "render_reference.py"))
    text = (ROOT / "docs" / "reference.md").read_text()
    assert script["render"](text) == text, "docs/reference.md is out of date: run python scripts/render_reference.py"
    structure({"evaluate": []}, RunConfig)  # cattrs resolves the annotations to types: the text must not change
    assert script["render"](text) == text
    assert "log_backends" in text and "lr_reference_batch" in text and "backbone_layers" in text


def test_the_readme_run_config_is_valid(tmp_path, capsys):
    """The README's example config resolves (every component, every parameter) with the installed plugins."""
    import re

    import pytest

    from facerep.cli import main

    pytest.importorskip("facerep_frl")
    block = re.search(r"```yaml\n(name: swav_faces.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README's run config example is gone"
    (tmp_path / "readme.yaml").write_text(block.group(1))
    assert main(["run", str(tmp_path / "readme.yaml"), "--dry-run", "--no-cost"]) == 0, capsys.readouterr().err
    assert "frl.swav" in capsys.readouterr().out


def test_the_readme_bench_suite_runs_as_written(tmp_path, capsys, monkeypatch):
    """The README's "your method joins with one line" suite, through the command a user types
    (`facerep bench my_suite.yaml --dry-run`: every method, evaluation and baseline resolved), with
    its `mymethod/my_preset` standing for the reader's plugin replaced by an installed preset."""
    import re

    import pytest

    from facerep.cli import main

    pytest.importorskip("facerep_frl")
    block = re.search(r"```yaml\n(# my_suite\.yaml.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README's bench suite example is gone"
    text = block.group(1).replace("mymethod/my_preset", "frl/moco_v2_tiny").replace(" configs/", f" {ROOT}/configs/")
    (tmp_path / "my_suite.yaml").write_text(text)  # the suite's paths are the README's, from the repository root
    monkeypatch.chdir(ROOT)  # ${FACEREP_DATA} defaults to ../shared/data from here
    code = main(["bench", str(tmp_path / "my_suite.yaml"), "--dry-run", "--work-dir", str(tmp_path / "bench")])
    out, err = capsys.readouterr()
    assert code == 0, err
    for row in ("MoCo-v2", "Mine", "random init", "raw pixels 24x24 grey"):
        assert row in out
    assert re.search(r"pretrain\s+Mine\s+300\s", out), out  # the suite's step budget reaches every method
