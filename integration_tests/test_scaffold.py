"""``facerep.scaffold.new_plugin`` writes a plugin package that really works: it builds and installs
(non-editable, into a private ``--target`` folder, so the shared environment never sees it), is
discovered through its entry point, passes its own tests (the ``facerep.testing`` contract suite
included) and trains its preset. And it never overwrites anything.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import facerep
from facerep.errors import ConfigError
from facerep.scaffold import new_plugin, plugin_files

NAME = "scaffoldtest"
#: One intra-op thread in the subprocesses: on a small, shared CI machine torch's OpenMP threads
#: otherwise oversubscribe the cores and a step of the tiny preset gets ~10x slower.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _pip_install(pkg: Path, site: Path, helpers) -> None:
    # offline and against the setuptools already installed: no index, no build isolation, no deps
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
           "--disable-pip-version-check", "--target", str(site), str(pkg)]
    res = subprocess.run(cmd, env=helpers.clean_env(), capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_generated_objective_plugin_installs_is_discovered_passes_its_tests_and_runs_its_preset(tmp_path, helpers):
    pkg = new_plugin("objective", NAME, tmp_path / f"facerep-{NAME}")
    assert pkg == (tmp_path / f"facerep-{NAME}").resolve()
    src = pkg / "src" / f"facerep_{NAME}"
    for rel in ("pyproject.toml", "README.md", "tests/test_objective.py"):
        assert (pkg / rel).is_file(), rel
    for rel in ("__init__.py", "plugin.py", "objective.py", f"configs/{NAME}_synthetic.yaml"):
        assert (src / rel).is_file(), rel

    # the package metadata: entry point = namespace, core pinned to its minor series, presets shipped
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())
    major, minor = facerep.__version__.split(".")[:2]
    assert meta["project"]["name"] == f"facerep-{NAME}"
    assert f"facerep-core>={major}.{minor},<{major}.{int(minor) + 1}" in meta["project"]["dependencies"]
    assert meta["project"]["entry-points"]["facerep"] == {NAME: f"facerep_{NAME}.plugin"}
    assert meta["tool"]["setuptools"]["package-data"] == {f"facerep_{NAME}": ["configs/*.yaml"]}
    plugin_py = (src / "plugin.py").read_text()
    assert "import torch" not in plugin_py and f'API_VERSION = "{facerep.API_VERSION}"' in plugin_py

    site = tmp_path / "site"
    _pip_install(pkg, site, helpers)
    assert (site / f"facerep_{NAME}" / "configs" / f"{NAME}_synthetic.yaml").is_file()  # package data installed
    env = helpers.clean_env(PYTHONPATH=str(site), **THREADS)

    # it is imported from the install, not from the source tree
    where = subprocess.run([sys.executable, "-c", f"import facerep_{NAME}; print(facerep_{NAME}.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr

    # discovered through its entry point, every import string resolves
    res = helpers.run("plugins", "check", "--expect", NAME, cwd=tmp_path, pythonpath=[site], env=THREADS)
    assert res.returncode == 0, res.stdout + res.stderr
    assert NAME in res.stdout.split("(", 1)[1].split(")", 1)[0].split(", ")

    # its own tests pass, the facerep.testing contract suite (auto-loaded pytest plugin) included
    res = subprocess.run([sys.executable, "-m", "pytest", str(pkg / "tests"), "-v", "-p", "no:cacheprovider"], cwd=pkg, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    contract = "TestScaffoldtestContract::test_forward_backward_finite PASSED"
    assert contract in res.stdout and "test_nt_xent_matches_the_hand_computed_value PASSED" in res.stdout, res.stdout[-4000:]
    assert " failed" not in res.stdout and " skipped" not in res.stdout

    # its preset trains and exports the backbone
    wd = tmp_path / "wd"
    res = helpers.run("run", f"{NAME}/{NAME}_synthetic", "--work-dir", wd, cwd=tmp_path, pythonpath=[site], env=THREADS,
                      timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert ["objective", "objective", f"{NAME}.{NAME}", f"facerep-{NAME}", "0.1.0"] in [line.split() for line in res.stdout.splitlines()]
    assert (wd / "backbone.safetensors").is_file()
    side = json.loads((wd / "backbone.json").read_text())
    assert side["method"] == f"{NAME}.{NAME}" and side["steps"] == 20
    manifest = {p["name"]: p for p in json.loads((wd / "plugins.json").read_text())}
    assert (manifest[NAME]["dist"], manifest[NAME]["status"]) == (f"facerep-{NAME}", "loaded")

    # and the environment running this test never saw it
    assert importlib.util.find_spec(f"facerep_{NAME}") is None
    assert NAME not in {ep.name for ep in md.entry_points(group="facerep")}


def test_refuses_a_non_empty_folder_and_leaves_it_untouched(tmp_path):
    dest = tmp_path / "mine"
    (dest / "src").mkdir(parents=True)
    (dest / "pyproject.toml").write_text("# my own project\n")
    (dest / "src" / "notes.txt").write_bytes(b"keep me")
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"exists and is not empty"):
        new_plugin("objective", NAME, dest)
    after = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in dest.rglob("*")) == ["notes.txt", "pyproject.toml", "src"]

    file_dest = tmp_path / "a_file"
    file_dest.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        new_plugin("objective", NAME, file_dest)
    assert file_dest.read_text() == "x"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (new_plugin("objective", NAME, empty) / "pyproject.toml").is_file()  # an empty folder is fine


@pytest.mark.parametrize("bad", ["Barlow", "1barlow", "bar-low", "bar low", "barlow_", "bar__low", "", "core", "class"])
def test_invalid_names_are_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ConfigError, match="plugin name"):
        new_plugin("objective", bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_kind_and_bad_package_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"kind 'backbone'.*supported kinds are objective"):
        new_plugin("backbone", "barlow", tmp_path / "out")
    with pytest.raises(ConfigError, match="package"):
        new_plugin("objective", "barlow", tmp_path / "out", package="not-a-package")
    assert not (tmp_path / "out").exists()
    files = plugin_files("objective", "my_loss", package="mylab_loss")
    assert "src/mylab_loss/objective.py" in files and "class MyLossObjective(nn.Module)" in files["src/mylab_loss/objective.py"]
    assert 'my_loss = "mylab_loss.plugin"' in files["pyproject.toml"] and 'name = "facerep-my-loss"' in files["pyproject.toml"]


def test_warns_when_the_name_is_an_installed_plugin(tmp_path):
    installed = sorted({ep.name for ep in md.entry_points(group="facerep")} - {"core"})
    if not installed:
        pytest.skip("no facerep plugin besides core is installed")
    with pytest.warns(UserWarning, match="already installed"):
        new_plugin("objective", installed[0], tmp_path / "out")
