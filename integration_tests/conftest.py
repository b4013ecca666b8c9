"""Shared helpers for multi-package tests.

Test modules get them through the ``helpers`` and ``make_dist`` fixtures.

Plugins are discovered for real: ``make_dist`` writes fake *installed distributions* (a
``<name>-<version>.dist-info`` folder with ``METADATA`` and ``entry_points.txt``, plus the plugin's
module files) into a folder that is put on ``PYTHONPATH`` of a ``facerep`` subprocess, where
``importlib.metadata`` finds them exactly as it finds pip-installed packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

EXAMPLE_DIST = "facerep-example-objective"


def facerep_command() -> list[str]:
    """The installed console script (what users run); ``python -m facerep.cli`` without one."""
    script = Path(sys.executable).with_name("facerep")
    if script.is_file():
        return [str(script)]
    found = shutil.which("facerep")
    return [found] if found else [sys.executable, "-m", "facerep.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without facerep's switches (so the outer shell cannot leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREP_")}
    env["PYTHONWARNINGS"] = "default"  # plugin warnings always reach stderr
    env["CUDA_VISIBLE_DEVICES"] = ""  # tests run on CPU even on a GPU machine
    env.update(extra)
    return env


def run_facerep(
    *args: str | os.PathLike,
    cwd: Path,
    pythonpath: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    environment = clean_env(**(env or {}))
    if pythonpath:  # the fake distributions first, then whatever the caller had
        environment["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run(
        [*facerep_command(), *map(str, args)], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )


class DistFactory:
    """Writes fake installed distributions into one site folder (``self.site``)."""

    def __init__(self, site: Path) -> None:
        self.site = site
        site.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, version: str, entry_points: Mapping[str, str], modules: Mapping[str, str]) -> Path:
        """``entry_points``: ``{entry-point name: module}`` in the ``facerep`` group; ``modules``:
        ``{relative file path: source}`` (dedented). Returns the dist-info folder."""
        info = self.site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text("[facerep]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
        (info / "RECORD").write_text("")
        for rel, source in modules.items():
            path = self.site / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).lstrip())
        return info


@pytest.fixture
def make_dist(tmp_path: Path) -> DistFactory:
    """``make_dist(name, version, entry_points, modules)``; the folder to put on the path is
    ``make_dist.site``."""
    return DistFactory(tmp_path / "site")


def plugin_source(
    *,
    register: str = "",
    api_version: str = "1.0",
    summary: str = "",
    prelude: str = "",
) -> str:
    """Source of a plugin module: a ``facerep_plugin_info`` and a ``facerep_register`` whose body
    is ``register`` (lines using ``registrar``), after an optional module-level ``prelude``."""
    body = textwrap.indent(textwrap.dedent(register).strip() or "pass", "    ")
    return (
        "from facerep.hookspecs import hookimpl\n"
        + textwrap.dedent(prelude)
        + "\n\n@hookimpl\ndef facerep_plugin_info():\n"
        + f"    return {{'api_version': {api_version!r}, 'summary': {summary!r}}}\n"
        + "\n\n@hookimpl\ndef facerep_register(registrar):\n"
        + body
        + "\n"
    )


#: A params class for ``facerep.testing.toy.NoiseFaces`` that imports no torch (attrs only), so a
#: fake plugin can register a dataset without making ``facerep list`` or a resolve import torch.
NOISE_PARAMS_SOURCE = """
import attrs


@attrs.frozen
class NoiseParams:
    n: int = 16
    size: int = 32
    seed: int = 0
"""


def write_yaml(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def pretraining_data() -> dict[str, object]:
    """The data block of a short pretraining: 16 of core's synthetic faces (not real data)."""
    return {"name": "core.synthetic", "params": {"n": 16, "size": 32, "n_identities": 4, "seed": 0}}


def vicreg_run_config(name: str = "vicreg_smoke") -> dict[str, object]:
    """A few CPU steps of the example plugin's objective on a tiny timm backbone."""
    return {
        "name": name,
        "seed": 0,
        "data": pretraining_data(),
        "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
        "objective": {"name": "example.vicreg", "params": {"expander_dims": [32, 32], "view_size": 32}},
        "train": {
            "max_steps": 3,
            "batch_size": 4,
            "device": "cpu",
            "channels_last": False,
            "optimizer": {"type": "sgd", "lr": 0.05, "weight_decay": 0.0},
            "log_every": 1,
        },
        "required_plugins": [EXAMPLE_DIST],
    }


def parse_list(text: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Parse ``facerep list`` output into ``({kind: {component: provided_by}}, {plugin: {dist,
    status, note}})``; table cells are separated by two or more spaces."""
    components: dict[str, dict[str, str]] = {}
    plugins: dict[str, dict[str, str]] = {}
    section: str | None = None
    for line in text.splitlines():
        head = re.fullmatch(r"(\w+)s \((\d+)\)", line.strip())
        if head:
            section = head.group(1)
            components[section] = {}
            continue
        if line.strip() == "plugins":
            section = "plugins"
            continue
        cells = re.split(r"\s{2,}", line.strip())
        if section is None or not line.strip() or cells[0] in ("name", "plugin") or set(cells[0]) == {"-"}:
            continue
        if section == "plugins":
            plugins[cells[0]] = {"dist": cells[1], "status": cells[2], "note": cells[3] if len(cells) > 3 else ""}
        else:
            components[section][cells[0]] = cells[1]
    return components, plugins


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The helpers above, for test modules (``--import-mode=importlib`` cannot import conftest)."""
    return SimpleNamespace(
        run=run_facerep,
        clean_env=clean_env,
        write_yaml=write_yaml,
        plugin_source=plugin_source,
        noise_params_source=NOISE_PARAMS_SOURCE,
        vicreg_run_config=vicreg_run_config,
        pretraining_data=pretraining_data,
        parse_list=parse_list,
        example_dist=EXAMPLE_DIST,
    )
