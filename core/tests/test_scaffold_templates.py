"""The ``facerep plugins new`` templates are package data: files under ``facerep/templates/`` that
a plugin author can read, every one of them used, listed in core's package-data, and filled in
completely."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import facerep
from facerep.errors import ConfigError
from facerep.scaffold import _LAYOUT, KINDS, plugin_files

TEMPLATES = Path(facerep.__file__).resolve().parent / "templates" / "plugin"
CORE = Path(facerep.__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", KINDS)
def test_every_template_file_is_written_and_every_written_file_has_a_template(kind):
    on_disk = sorted(str(p.relative_to(TEMPLATES / kind)) for p in (TEMPLATES / kind).rglob("*") if p.is_file())
    assert on_disk == sorted(f"{t}.tmpl" for t in _LAYOUT[kind])
    files = plugin_files(kind, "barlow_x", package="bx")
    assert len(files) == len(on_disk) and "src/bx/configs/barlow_x_synthetic.yaml" in files
    for path, text in files.items():
        assert "${" not in text and "${" not in path, f"{path}: a placeholder left"
        assert text.endswith("\n") and "\r" not in text


def test_the_templates_are_package_data():
    """Shipped in the wheel (integration_tests/test_core_wheel.py builds one and looks)."""
    globs = tomllib.loads((CORE / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["facerep"]
    assert "templates/**/*.tmpl" in globs
    assert all(p.suffix == ".tmpl" for p in TEMPLATES.rglob("*") if p.is_file())


def test_a_template_reads_as_the_file_it_makes():
    """Placeholders only where the name goes: every other line is the generated file's, in place."""
    files = plugin_files("objective", "barlow")
    for template, path in _LAYOUT["objective"].items():
        lines = (TEMPLATES / "objective" / f"{template}.tmpl").read_text().splitlines()
        made = files[path.replace("${package}", "facerep_barlow").replace("${name}", "barlow")].splitlines()
        assert len(made) == len(lines), template
        assert [m for m, t in zip(made, lines, strict=True) if "$" not in t] == [t for t in lines if "$" not in t], template
    assert 'API_VERSION = "${api_version}"' in (TEMPLATES / "objective" / "package" / "plugin.py.tmpl").read_text()


def test_an_unknown_kind_is_refused():
    with pytest.raises(ConfigError, match="supported kinds are objective"):
        plugin_files("task", "x")
