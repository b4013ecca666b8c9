"""The plugin author's commands: ``facerep show``, ``facerep plugins new``, ``python -m facerep``."""

from __future__ import annotations

import subprocess
import sys

from facerep.cli import main


def test_show_prints_params_with_types_defaults_checks_and_docs(capsys, local_plugins):
    assert main(["show", "core.timm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backbone core.timm (facerep-core")
    row = next(line for line in out.splitlines() if line.startswith("model "))
    assert row.split()[1] == "str" and "timm model name" in row.lower()
    assert main(["show", "toy", "--kind", "objective"]) == 0  # a plugin's component, by short name
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[4:] if line.strip()}
    assert "temperature" in rows and "0.5" in rows["temperature"] and "float" in rows["temperature"]
    assert "EMA copy" in rows["ema"], "the #: comment above the field is its doc"


def test_show_unknown_component_suggests_close_matches(capsys, local_plugins):
    assert main(["show", "core.timn"]) == 5
    err = capsys.readouterr().err
    assert "did you mean: core.timm" in err and "Traceback" not in err


def test_plugins_new_writes_a_package_and_never_overwrites(tmp_path, capsys):
    dest = tmp_path / "facerep-mine"
    assert main(["plugins", "new", "objective", "mine", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"pip install -e {dest}" in out and "facerep run mine/mine_synthetic" in out
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert "pyproject.toml" in files and "src/facerep_mine/plugin.py" in files and "tests/test_objective.py" in files
    assert 'mine = "facerep_mine.plugin"' in (dest / "pyproject.toml").read_text()
    before = (dest / "pyproject.toml").read_bytes()
    assert main(["plugins", "new", "objective", "mine", "--dest", str(dest)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (dest / "pyproject.toml").read_bytes() == before


def test_python_dash_m_facerep_is_the_command(tmp_path):
    res = subprocess.run([sys.executable, "-m", "facerep", "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("facerep ")
