"""The package as a facerep plugin: a light entry-point module, the registered names, and params
structured from a config (types and validators applied, errors naming the field path)."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys

import pytest

from facerep.errors import ConfigError


@pytest.fixture
def plugins():
    import facerep_recognition.plugin
    from facerep.plugins import load_plugins

    installed = [ep for ep in md.entry_points(group="facerep") if ep.name == "recognition"]
    return load_plugins(strict=True, only=["recognition"]) if installed else load_plugins(
        strict=True, entry_points=[], extra=[("recognition", facerep_recognition.plugin)])


def test_plugin_module_imports_nothing_heavy():
    code = ("import sys, facerep_recognition.plugin as p; "
            "heavy = sorted(m for m in ('torch', 'timm', 'cv2', 'numpy') if m in sys.modules); "
            "print(','.join(heavy)); assert p.facerep_plugin_info()['api_version'] == '1.5'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"facerep_recognition.plugin imported {out.stdout.strip()}"


def test_registers_the_reader_and_the_task(plugins):
    from facerep_recognition.lfw import LFW, LFWParams
    from facerep_recognition.task import FaceVerification, VerificationParams

    lfw, task = plugins.get("dataset", "recognition.lfw"), plugins.get("task", "recognition.verification")
    assert (lfw.name, task.name) == ("recognition.lfw", "recognition.verification")
    assert lfw.load() is LFW and lfw.load_params() is LFWParams
    assert task.load() is FaceVerification and task.load_params() is VerificationParams


def test_params_from_a_config(plugins):
    from facerep.build import build, resolve
    from facerep.config import ComponentConfig

    spec = ComponentConfig("recognition.verification", {"margin": "arcface", "fars": [1e-4, 1e-3], "head_hidden": None,
                                                        "input_size": 64})
    task = build(resolve("task", spec, "evaluate.0.task", plugins))
    assert task.params.fars == (1e-4, 1e-3) and task.params.margin_value == 0.5 and task.input_size == 64
    assert (task.name, task.primary_metric, task.probe_label) == ("verification", "acc", None)
    with pytest.raises(ConfigError, match=r"evaluate\.0\.task\.params"):
        resolve("task", ComponentConfig("recognition.verification", {"margin": "sphereface"}), "evaluate.0.task", plugins)
    lfw = resolve("dataset", ComponentConfig("recognition.lfw", {"pairs": "pairs.txt", "on_error": "skip"}), "evaluate.0.test", plugins)
    assert (lfw.params.pairs, lfw.params.on_error, lfw.params.root) == ("pairs.txt", "skip", "${FACEREP_DATA}/lfw3d")
