"""facerep-core's wheel ships its data: the presets under ``facerep/configs`` and the
``facerep plugins new`` templates under ``facerep/templates`` (built offline, no build isolation)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import facerep

PACKAGE = Path(facerep.__file__).resolve().parent
CORE = PACKAGE.parents[1]


def test_the_wheel_holds_the_presets_and_the_plugin_templates(tmp_path, helpers):
    src = tmp_path / "core"  # a copy: the build must not leave build/ or egg-info in the checkout
    shutil.copytree(CORE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
           "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)]
    res = subprocess.run(cmd, env=helpers.clean_env(), capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("facerep_core-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, pattern in (("templates", "*.tmpl"), ("configs", "*.yaml")):
        want = {f"facerep/{p.relative_to(PACKAGE).as_posix()}" for p in (PACKAGE / folder).rglob(pattern)}
        assert want and want <= names, sorted(want - names)
