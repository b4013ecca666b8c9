"""Plugins are isolated from each other, with real discovery.

Each test writes fake installed distributions (``*.dist-info`` + modules) into a folder that goes on
``PYTHONPATH`` of a ``facerep`` subprocess; the pip-installed plugins (the example plugin, and any
other installed) are discovered beside them exactly as in a user's environment.
"""

from __future__ import annotations

import json
import re

import pytest

from facerep.hookspecs import API_VERSION

HAS_EXAMPLE = bool(__import__("importlib.util").util.find_spec("facerep_example_objective"))
needs_example = pytest.mark.skipif(not HAS_EXAMPLE, reason="facerep-example-objective is not installed")

MISSING = "facerep_missing_dependency_xyz"


def _good(make_dist, helpers, *, ep: str = "goodplug", dist: str = "fake-good", version: str = "1.2.3", short: str = "noise") -> None:
    """A working plugin: a dataset (torch-free params class, target in facerep.testing.toy)."""
    pkg = dist.replace("-", "_")
    make_dist(dist, version, {ep: f"{pkg}.plugin"}, {
        f"{pkg}/__init__.py": "",
        f"{pkg}/params.py": helpers.noise_params_source,
        f"{pkg}/plugin.py": helpers.plugin_source(
            summary=f"{dist} test plugin",
            register=f"registrar.dataset({short!r}, 'facerep.testing.toy:NoiseFaces', params='{pkg}.params:NoiseParams')",
        ),
    })


def _broken_import(make_dist, helpers) -> None:
    """Fails at import (a missing dependency); leaves a marker file when its module is imported."""
    make_dist("fake-broken-import", "0.0.1", {"brokenimp": "fake_broken_import.plugin"}, {
        "fake_broken_import/__init__.py": "",
        "fake_broken_import/plugin.py": helpers.plugin_source(
            prelude=f"from pathlib import Path\nPath(__file__).with_name('imported.marker').touch()\nimport {MISSING}\n",
        ),
    })


def _broken_register(make_dist, helpers) -> None:
    """Registers one dataset, then raises inside facerep_register."""
    make_dist("fake-broken-register", "0.2.0", {"brokenreg": "fake_broken_register.plugin"}, {
        "fake_broken_register/__init__.py": "",
        "fake_broken_register/plugin.py": helpers.plugin_source(
            register="registrar.dataset('half', 'facerep.testing.toy:NoiseFaces')\nraise RuntimeError('registration exploded')",
        ),
    })


IMPORT_MSG = (f"facerep plugin 'brokenimp' from fake-broken-import 0.0.1 was skipped (failed): "
              f"import failed: ModuleNotFoundError: No module named '{MISSING}'")
REGISTER_MSG = ("facerep plugin 'brokenreg' from fake-broken-register 0.2.0 was skipped (failed): "
                "facerep_register failed: RuntimeError: registration exploded")


# ---------------------------------------------------------------------------------------------
# (1) a broken plugin is skipped, loudly; strict mode makes it an error
# ---------------------------------------------------------------------------------------------


def test_broken_plugins_are_skipped_with_a_message_naming_plugin_and_distribution(tmp_path, make_dist, helpers):
    _good(make_dist, helpers)
    _broken_import(make_dist, helpers)
    _broken_register(make_dist, helpers)
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stderr
    assert IMPORT_MSG in res.stderr
    assert REGISTER_MSG in res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert plugins["brokenimp"] == {"dist": "fake-broken-import 0.0.1", "status": "failed",
                                    "note": f"import failed: ModuleNotFoundError: No module named '{MISSING}'"}
    assert plugins["brokenreg"]["status"] == "failed" and plugins["brokenreg"]["dist"] == "fake-broken-register 0.2.0"
    # the others still work ...
    assert plugins["goodplug"]["status"] == "loaded" and plugins["core"]["status"] == "loaded"
    assert components["dataset"]["goodplug.noise"] == "fake-good 1.2.3"
    assert components["backbone"]["core.timm"] == "facerep-core 0.1.0"
    if HAS_EXAMPLE:
        assert plugins["example"]["status"] == "loaded"
        assert "example.vicreg" in components["objective"]
    # ... and nothing the failing plugin registered before raising is left behind
    assert "brokenreg.half" not in components["dataset"]
    assert (make_dist.site / "fake_broken_import" / "imported.marker").is_file()


@pytest.mark.parametrize("which", ["import", "register"])
def test_strict_mode_turns_a_broken_plugin_into_an_error_naming_it(tmp_path, make_dist, helpers, which):
    _good(make_dist, helpers)
    (_broken_import if which == "import" else _broken_register)(make_dist, helpers)
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site], env={"FACEREP_STRICT_PLUGINS": "1"})
    assert res.returncode == 4
    message = (IMPORT_MSG if which == "import" else REGISTER_MSG).replace(" was skipped (failed):", " (failed):")
    assert f"facerep: error: {message} [FACEREP_STRICT_PLUGINS is set]" in res.stderr
    assert "was skipped" not in res.stderr  # strict mode does not skip
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_a_run_still_works_beside_broken_plugins(tmp_path, make_dist, helpers):
    """A pretraining run whose data comes from one plugin (fake) and objective from another
    (pip-installed), while two other plugins are broken."""
    if not HAS_EXAMPLE:
        pytest.skip("facerep-example-objective is not installed")
    _good(make_dist, helpers)
    _broken_import(make_dist, helpers)
    _broken_register(make_dist, helpers)
    cfg = helpers.vicreg_run_config(name="beside_broken")
    cfg["data"] = {"name": "goodplug.noise", "params": {"n": 8, "size": 36}}
    cfg["train"]["max_steps"] = 2
    path = helpers.write_yaml(tmp_path / "cfg.yaml", cfg)
    res = helpers.run("run", path, "--work-dir", tmp_path / "wd", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert IMPORT_MSG in res.stderr and REGISTER_MSG in res.stderr
    assert (tmp_path / "wd" / "backbone.safetensors").is_file()
    manifest = {p["name"]: p for p in json.loads((tmp_path / "wd" / "plugins.json").read_text())}
    assert manifest["goodplug"]["status"] == "loaded" and manifest["goodplug"]["dist"] == "fake-good"
    assert manifest["brokenimp"]["status"] == "failed" and manifest["brokenreg"]["status"] == "failed"


def test_a_component_with_a_missing_dependency_fails_the_run_naming_it_not_discovery(tmp_path, make_dist, helpers):
    """Registration is lazy: the plugin loads; building its component is what fails, readably."""
    _good(make_dist, helpers)
    make_dist("fake-needs-dep", "0.4", {"needsdep": "fake_needs_dep.plugin"}, {
        "fake_needs_dep/__init__.py": "",
        "fake_needs_dep/comp.py": f"import {MISSING}\n",
        "fake_needs_dep/plugin.py": helpers.plugin_source(
            register="registrar.dataset('faces', 'fake_needs_dep.comp:Faces', params='fake_needs_dep.comp:FacesParams')"),
    })
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0 and "was skipped" not in res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert plugins["needsdep"]["status"] == "loaded" and components["dataset"]["needsdep.faces"] == "fake-needs-dep 0.4"
    cfg = helpers.vicreg_run_config()
    cfg["data"] = {"name": "needsdep.faces"}
    cfg["required_plugins"] = []
    res = helpers.run("run", helpers.write_yaml(tmp_path / "cfg.yaml", cfg), cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 4
    assert res.stderr.strip() == (f"facerep: error: dataset needsdep.faces (fake-needs-dep 0.4): cannot import "
                                  f"'fake_needs_dep.comp:FacesParams': ModuleNotFoundError: No module named '{MISSING}'")


# ---------------------------------------------------------------------------------------------
# (2) name collisions are reported and skipped, naming both distributions; the rest keeps working
# ---------------------------------------------------------------------------------------------

HAS_FRL = bool(__import__("importlib.util").util.find_spec("facerep_frl"))
DUP_ERROR = "plugin name 'dup' is provided by both fake-dup-a 1.0 and fake-dup-b 2.0; none of them is loaded; uninstall all but one"


def _plugin_rows(stdout: str, name: str) -> list[list[str]]:
    """Every row of ``facerep list``'s plugin table for ``name`` (parse_list keeps only the last)."""
    table = stdout.split("\nplugins\n", 1)[1]
    return [cells for cells in (re.split(r"\s{2,}", line.strip()) for line in table.splitlines()) if cells[0] == name]


def _dry_run(helpers, tmp_path, make_dist, **blocks):
    cfg = helpers.vicreg_run_config()
    cfg.update(blocks)
    cfg["required_plugins"] = []
    path = helpers.write_yaml(tmp_path / "cfg.yaml", cfg)
    return helpers.run("run", path, "--dry-run", "--no-cost", cwd=tmp_path, pythonpath=[make_dist.site])


def test_two_distributions_with_the_same_entry_point_name_are_skipped_naming_both(tmp_path, make_dist, helpers):
    _good(make_dist, helpers, ep="dup", dist="fake-dup-a", version="1.0")
    _good(make_dist, helpers, ep="dup", dist="fake-dup-b", version="2.0")
    _good(make_dist, helpers)
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stderr
    assert f"facerep plugin 'dup' from fake-dup-a 1.0 was skipped (collision): {DUP_ERROR}" in res.stderr
    assert f"facerep plugin 'dup' from fake-dup-b 2.0 was skipped (collision): {DUP_ERROR}" in res.stderr
    assert "Traceback" not in res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert _plugin_rows(res.stdout, "dup") == [["dup", "fake-dup-a 1.0", "collision", DUP_ERROR],
                                               ["dup", "fake-dup-b 2.0", "collision", DUP_ERROR]]
    assert "dup.noise" not in components["dataset"]  # neither claimant is trusted
    assert components["dataset"]["goodplug.noise"] == "fake-good 1.2.3" and plugins["goodplug"]["status"] == "loaded"
    assert components["backbone"]["core.timm"] == "facerep-core 0.1.0"

    res = helpers.run("plugins", "check", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 1
    assert f"plugin dup (fake-dup-a 1.0): collision: {DUP_ERROR}" in res.stderr.splitlines()
    assert f"plugin dup (fake-dup-b 2.0): collision: {DUP_ERROR}" in res.stderr.splitlines()

    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site], env={"FACEREP_STRICT_PLUGINS": "1"})
    assert res.returncode == 4 and res.stdout == ""
    strict_error = f"facerep plugin 'dup' from fake-dup-a 1.0 (collision): {DUP_ERROR} [FACEREP_STRICT_PLUGINS is set]"
    assert f"facerep: error: {strict_error}" in res.stderr
    assert "Traceback" not in res.stderr

    if HAS_EXAMPLE:  # a run needing the skipped name says why; an unrelated run works
        res = _dry_run(helpers, tmp_path, make_dist, data={"name": "dup.noise"})
        assert res.returncode == 5
        assert (f"facerep: error: data.name: unknown dataset 'dup.noise': plugin 'dup' (fake-dup-a 1.0, fake-dup-b 2.0) "
                f"was skipped: collision: {DUP_ERROR}") in res.stderr
        res = _dry_run(helpers, tmp_path, make_dist, data={"name": "goodplug.noise"})
        assert res.returncode == 0, res.stderr
        assert "goodplug.noise" in res.stdout


@pytest.mark.skipif(not (HAS_FRL and HAS_EXAMPLE), reason="needs facerep-frl and facerep-example-objective installed")
def test_a_second_distribution_named_frl_does_not_block_list_or_unrelated_runs(tmp_path, make_dist, helpers):
    """The bug report: a fork installed beside facerep-frl under the same entry-point name."""
    _good(make_dist, helpers, ep="frl", dist="fake-frl-fork", version="0.9", short="swav")
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stderr
    rows = _plugin_rows(res.stdout, "frl")
    assert sorted((r[1], r[2]) for r in rows) == [("facerep-frl 0.1.0", "collision"), ("fake-frl-fork 0.9", "collision")]
    assert all("facerep-frl 0.1.0" in r[3] and "fake-frl-fork 0.9" in r[3] for r in rows)
    components, plugins = helpers.parse_list(res.stdout)
    assert not any(name.startswith("frl.") for name in components["objective"])
    assert plugins["example"]["status"] == "loaded" and "example.vicreg" in components["objective"]

    res = _dry_run(helpers, tmp_path, make_dist, objective={"name": "frl.swav"})
    assert res.returncode == 5
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("facerep: error:")]
    assert line.startswith("facerep: error: objective.name: unknown objective 'frl.swav': plugin 'frl' (")
    assert "was skipped: collision: plugin name 'frl' is provided by both" in line
    assert "facerep-frl 0.1.0" in line and "fake-frl-fork 0.9" in line
    res = _dry_run(helpers, tmp_path, make_dist)  # example.vicreg on core's data: unrelated, works
    assert res.returncode == 0, res.stderr


def test_a_distribution_claiming_the_core_name_is_skipped_and_core_stays(tmp_path, make_dist, helpers):
    """Another distribution using the ``core`` namespace would register ``core.<name>``."""
    _good(make_dist, helpers, ep="core", dist="fake-core-squatter", version="0.1", short="timm")
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stderr
    error = ("plugin name 'core' is provided by both facerep-core 0.1.0 and fake-core-squatter 0.1; "
             "'core' is reserved for facerep-core; uninstall the other distribution")
    assert f"facerep plugin 'core' from fake-core-squatter 0.1 was skipped (collision): {error}" in res.stderr
    assert _plugin_rows(res.stdout, "core") == [["core", "facerep-core 0.1.0", "loaded", "core built-ins"],
                                                ["core", "fake-core-squatter 0.1", "collision", error]]
    components, _ = helpers.parse_list(res.stdout)
    assert components["backbone"]["core.timm"] == "facerep-core 0.1.0"
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site], env={"FACEREP_STRICT_PLUGINS": "1"})
    assert res.returncode == 4
    assert f"facerep: error: facerep plugin 'core' from fake-core-squatter 0.1 (collision): {error}" in res.stderr


def test_a_plugin_registering_one_name_twice_keeps_the_first_and_reports_it(tmp_path, make_dist, helpers):
    make_dist("fake-twice", "0.3", {"twice": "fake_twice.plugin"}, {
        "fake_twice/__init__.py": "",
        "fake_twice/params.py": helpers.noise_params_source,
        "fake_twice/plugin.py": helpers.plugin_source(register=(
            "registrar.dataset('noise', 'facerep.testing.toy:NoiseFaces', params='fake_twice.params:NoiseParams')\n"
            "registrar.dataset('noise', 'facerep.testing.toy:OtherFaces')\n"
            "registrar.dataset('more', 'facerep.testing.toy:NoiseFaces', params='fake_twice.params:NoiseParams')"
        )),
    })
    _good(make_dist, helpers)
    duplicate = ("dataset 'twice.noise' is registered twice: by fake-twice 0.3 (plugin 'twice', facerep.testing.toy:NoiseFaces) "
                 "and by fake-twice 0.3 (plugin 'twice', facerep.testing.toy:OtherFaces); a bug in fake-twice: report it to its authors")
    note = f"duplicate registration skipped, the first is kept: {duplicate}"
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stderr
    assert "facerep plugin 'twice' from fake-twice 0.3 is loaded, but a registration was skipped (" in res.stderr
    assert duplicate in res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert plugins["twice"] == {"dist": "fake-twice 0.3", "status": "loaded", "note": note}
    # the first registration and the plugin's other component are there, and so are the other plugins'
    assert components["dataset"]["twice.noise"] == "fake-twice 0.3" and components["dataset"]["twice.more"] == "fake-twice 0.3"
    assert components["dataset"]["goodplug.noise"] == "fake-good 1.2.3"

    res = helpers.run("plugins", "check", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 1
    assert f"plugin twice (fake-twice 0.3): loaded: {note}" in res.stderr.splitlines()

    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site], env={"FACEREP_STRICT_PLUGINS": "1"})
    assert res.returncode == 4 and res.stdout == ""
    assert f"facerep: error: {duplicate} [FACEREP_STRICT_PLUGINS is set]" in res.stderr

    if HAS_EXAMPLE:  # a run gets the kept (first) registration: the one with a params class
        res = _dry_run(helpers, tmp_path, make_dist, data={"name": "twice.noise", "params": {"n": 8, "size": 36}})
        assert res.returncode == 0, res.stderr
        assert re.search(r"^data\s+dataset\s+twice\.noise\s+fake-twice 0\.3$", res.stdout, re.M)
        assert "data (twice.noise):" in res.stdout and "  size = 36" in res.stdout


def test_a_component_of_an_incompatible_plugin_fails_the_run_saying_it_was_skipped(tmp_path, make_dist, helpers):
    make_dist("fake-old", "0.9", {"old": "fake_old.plugin"}, {
        "fake_old/__init__.py": "",
        "fake_old/plugin.py": helpers.plugin_source(
            api_version="2.0", register="registrar.dataset('noise', 'facerep.testing.toy:NoiseFaces')"),
    })
    _good(make_dist, helpers)
    reason = f"incompatible: written for facerep API 2.0, this core provides {API_VERSION}"
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stderr
    assert "facerep plugin 'old' from fake-old 0.9 was skipped (incompatible): written for facerep API 2.0" in res.stderr
    _, plugins = helpers.parse_list(res.stdout)
    assert plugins["old"]["status"] == "incompatible"
    if not HAS_EXAMPLE:
        pytest.skip("facerep-example-objective is not installed")
    res = _dry_run(helpers, tmp_path, make_dist, data={"name": "old.noise"})
    assert res.returncode == 5
    assert f"facerep: error: data.name: unknown dataset 'old.noise': plugin 'old' (fake-old 0.9) was skipped: {reason}" in res.stderr
    # a short name no loaded plugin has lists the skipped plugins and why
    res = _dry_run(helpers, tmp_path, make_dist, data={"name": "nothing_like_it"})
    assert res.returncode == 5
    assert f"Skipped plugins: plugin 'old' (fake-old 0.9) was skipped: {reason}." in res.stderr


def test_the_same_short_name_in_two_distributions_is_ambiguous_naming_both(tmp_path, make_dist, helpers):
    _good(make_dist, helpers)  # goodplug.noise from fake-good
    _good(make_dist, helpers, ep="other", dist="fake-other", version="0.3")  # other.noise from fake-other
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 0, res.stderr
    components, _ = helpers.parse_list(res.stdout)
    assert components["dataset"]["goodplug.noise"] == "fake-good 1.2.3"
    assert components["dataset"]["other.noise"] == "fake-other 0.3"
    cfg = helpers.vicreg_run_config()
    cfg["data"] = {"name": "noise"}
    cfg["required_plugins"] = []
    path = helpers.write_yaml(tmp_path / "cfg.yaml", cfg)
    res = helpers.run("run", path, "--dry-run", cwd=tmp_path, pythonpath=[make_dist.site])
    assert res.returncode == 5
    assert ("facerep: error: data.name: dataset name 'noise' is ambiguous: goodplug.noise (fake-good), "
            "other.noise (fake-other); use the qualified name") in res.stderr


# ---------------------------------------------------------------------------------------------
# (3) FACEREP_DISABLE_PLUGINS and FACEREP_PLUGINS
# ---------------------------------------------------------------------------------------------


def test_disable_plugins_skips_them_without_importing_them(tmp_path, make_dist, helpers):
    _good(make_dist, helpers)
    _broken_import(make_dist, helpers)
    _broken_register(make_dist, helpers)
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site], env={"FACEREP_DISABLE_PLUGINS": "brokenimp, brokenreg"})
    assert res.returncode == 0, res.stderr
    assert "was skipped" not in res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert plugins["brokenimp"]["status"] == "disabled" and plugins["brokenreg"]["status"] == "disabled"
    assert plugins["brokenimp"]["dist"] == "fake-broken-import 0.0.1"  # still listed, with its distribution
    assert plugins["goodplug"]["status"] == "loaded" and "goodplug.noise" in components["dataset"]
    assert not (make_dist.site / "fake_broken_import" / "imported.marker").exists(), "a disabled plugin was imported"
    # strict mode has nothing to complain about once the broken ones are disabled
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site],
                      env={"FACEREP_DISABLE_PLUGINS": "brokenimp,brokenreg", "FACEREP_STRICT_PLUGINS": "1"})
    assert res.returncode == 0, res.stderr


def test_plugins_allow_list_loads_only_those_plus_core(tmp_path, make_dist, helpers):
    _good(make_dist, helpers)
    _good(make_dist, helpers, ep="other", dist="fake-other", version="0.3")
    _broken_import(make_dist, helpers)
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site], env={"FACEREP_PLUGINS": "goodplug"})
    assert res.returncode == 0, res.stderr
    assert "was skipped" not in res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert {name for name, p in plugins.items() if p["status"] == "loaded"} == {"core", "goodplug"}
    assert {p["status"] for name, p in plugins.items() if name not in ("core", "goodplug")} == {"disabled"}
    providers = {dist for table in components.values() for dist in table.values()}
    assert providers == {"facerep-core 0.1.0", "fake-good 1.2.3"}
    assert not (make_dist.site / "fake_broken_import" / "imported.marker").exists()


# ---------------------------------------------------------------------------------------------
# (4) core with a single method plugin
# ---------------------------------------------------------------------------------------------


@needs_example
def test_core_with_only_the_example_plugin_lists_and_runs(tmp_path, make_dist, helpers):
    _good(make_dist, helpers)
    _broken_import(make_dist, helpers)
    env = {"FACEREP_PLUGINS": "example"}
    res = helpers.run("list", cwd=tmp_path, pythonpath=[make_dist.site], env=env)
    assert res.returncode == 0, res.stderr
    components, plugins = helpers.parse_list(res.stdout)
    assert {name for name, p in plugins.items() if p["status"] == "loaded"} == {"core", "example"}
    providers = {dist for table in components.values() for dist in table.values()}
    assert providers == {"facerep-core 0.1.0", "facerep-example-objective 0.1.0"}
    assert components["objective"] == {"example.vicreg": "facerep-example-objective 0.1.0"}

    cfg = helpers.write_yaml(tmp_path / "cfg.yaml", helpers.vicreg_run_config(name="only_example"))
    res = helpers.run("run", cfg, "--work-dir", tmp_path / "wd", "-o", "train.max_steps=2", cwd=tmp_path,
                      pythonpath=[make_dist.site], env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "was skipped" not in res.stderr
    assert (tmp_path / "wd" / "backbone.safetensors").is_file()
    loaded = {p["name"] for p in json.loads((tmp_path / "wd" / "plugins.json").read_text()) if p["status"] == "loaded"}
    assert loaded == {"core", "example"}
