"""Plugin loading and the component registry, with entry points of real (temporary) distributions
and in-memory plugin modules."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import types
from collections.abc import Callable

import pytest

from facerep.errors import ComponentNotFoundError, PluginError, RegistrationCollisionError
from facerep.hookspecs import API_VERSION, hookimpl
from facerep.plugins import get_plugins, load_plugins, reset_plugins
from facerep.registry import Registrar, Registry, import_string


@pytest.fixture(autouse=True)
def _no_env_switches(monkeypatch):
    for var in ("FACEREP_STRICT_PLUGINS", "FACEREP_DISABLE_PLUGINS", "FACEREP_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


def plugin_module(name: str, register: Callable | None = None, api_version: str | None = API_VERSION,
                  summary: str = "") -> types.ModuleType:
    """An in-memory plugin module with ``facerep_plugin_info`` and (optionally) ``facerep_register``."""
    mod = types.ModuleType(name)
    if api_version is not None:
        @hookimpl
        def facerep_plugin_info():
            return {"api_version": api_version, "summary": summary}

        mod.facerep_plugin_info = facerep_plugin_info
    if register is not None:
        @hookimpl
        def facerep_register(registrar):
            register(registrar)

        mod.facerep_register = facerep_register
    return mod


@pytest.fixture
def entry_point(tmp_path, monkeypatch):
    """``entry_point(dist, version, ep_name, module)``: the entry point of a distribution written to
    disk (so ``ep.dist`` is real metadata); a module object is installed in ``sys.modules``."""
    count = 0

    def make(dist: str, version: str, name: str, module: types.ModuleType | str) -> md.EntryPoint:
        nonlocal count
        count += 1
        module_name = module if isinstance(module, str) else module.__name__
        if not isinstance(module, str):
            monkeypatch.setitem(sys.modules, module_name, module)
        info = tmp_path / f"d{count}" / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[facerep]\n{name} = {module_name}\n")
        (ep,) = md.PathDistribution(info).entry_points
        return ep

    return make


def _objective(short: str, target: str = "facerep.testing.toy:ToyContrastive") -> Callable:
    return lambda registrar: registrar.objective(short, target, params="facerep.testing.toy:ToyParams", summary=f"{short} summary")


def _statuses(plugins) -> dict[str, str]:
    return {r.name: r.status for r in plugins.records}


# ---------------------------------------------------------------------------------------------
# namespacing and lookup
# ---------------------------------------------------------------------------------------------


def test_components_are_namespaced_by_entry_point_name_and_credit_the_distribution(entry_point):
    ep = entry_point("fake-alpha", "1.0", "alpha", plugin_module("fake_alpha_plugin", _objective("toy")))
    plugins = load_plugins(entry_points=[ep])
    (spec,) = plugins.registry.specs("objective")
    assert (spec.name, spec.short_name, spec.plugin, spec.dist, spec.version) == ("alpha.toy", "toy", "alpha", "fake-alpha", "1.0")
    assert spec.target == "facerep.testing.toy:ToyContrastive" and spec.summary == "toy summary"
    assert _statuses(plugins) == {"core": "loaded", "alpha": "loaded"}
    # core registers through the same hooks, under its own namespace
    assert {s.name for s in plugins.registry.specs("backbone")} == {"core.pixels", "core.timm"}
    assert plugins.registry.specs("backbone")[0].dist == "facerep-core"


def test_short_name_works_when_unique_and_is_ambiguous_otherwise(entry_point):
    a = entry_point("fake-alpha", "1.0", "alpha", plugin_module("fake_alpha_plugin", _objective("toy")))
    b = entry_point("fake-beta", "2.0", "beta", plugin_module("fake_beta_plugin", lambda r: (_objective("toy")(r), _objective("solo")(r))))
    plugins = load_plugins(entry_points=[a, b])
    assert plugins.get("objective", "solo").name == "beta.solo"
    assert plugins.get("objective", "alpha.toy").dist == "fake-alpha"
    assert plugins.get("objective", "beta.toy").dist == "fake-beta"
    with pytest.raises(ComponentNotFoundError) as err:
        plugins.get("objective", "toy")
    assert str(err.value) == "objective name 'toy' is ambiguous: alpha.toy (fake-alpha), beta.toy (fake-beta); use the qualified name"
    # alone, the short name resolves
    assert load_plugins(entry_points=[a]).get("objective", "toy").name == "alpha.toy"


def test_unknown_name_lists_close_matches_and_installed_plugins(entry_point):
    ep = entry_point("fake-alpha", "1.0", "alpha", plugin_module("fake_alpha_plugin", _objective("swav")))
    plugins = load_plugins(entry_points=[ep])
    with pytest.raises(ComponentNotFoundError) as err:
        plugins.get("objective", "alpha.swavv")
    msg = str(err.value)
    assert msg.startswith("unknown objective 'alpha.swavv'. did you mean: alpha.swav")  # best match first
    assert "Registered objectives: alpha.swav." in msg
    assert "Installed plugins: core (facerep-core 0.1.0), alpha (fake-alpha 1.0)." in msg
    assert "pip install" in msg
    assert isinstance(err.value, KeyError)  # callers may catch KeyError
    # nothing close: no suggestion, but still the registered names and the plugins
    with pytest.raises(ComponentNotFoundError) as err:
        plugins.get("objective", "zzzzzz")
    assert "did you mean" not in str(err.value) and "Installed plugins: core" in str(err.value)
    # a misspelt short name suggests the short name too
    with pytest.raises(ComponentNotFoundError, match=r"did you mean: .*swav"):
        plugins.get("objective", "swab")
    with pytest.raises(ComponentNotFoundError, match=r"unknown component kind 'loss'; kinds: dataset, backbone"):
        plugins.get("loss", "x")


def test_registering_imports_nothing_until_the_component_is_loaded(entry_point, tmp_path, monkeypatch):
    pkg = tmp_path / "lazy_src"
    pkg.mkdir()
    (pkg / "facerep_lazy_target_mod.py").write_text("import attrs\n\n@attrs.frozen\nclass P:\n    x: int = 1\n\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.delitem(sys.modules, "facerep_lazy_target_mod", raising=False)
    reg = lambda r: r.objective("thing", "facerep_lazy_target_mod:Thing", params="facerep_lazy_target_mod:P")
    plugins = load_plugins(entry_points=[entry_point("fake-lazy", "0.1", "lazy", plugin_module("fake_lazy_plugin", reg))])
    spec = plugins.get("objective", "lazy.thing")
    assert "facerep_lazy_target_mod" not in sys.modules
    assert spec.load().__name__ == "Thing"
    assert "facerep_lazy_target_mod" in sys.modules
    assert spec.load_params()().x == 1


def test_import_string_forms_and_errors():
    assert import_string("facerep.errors:ConfigError").__name__ == "ConfigError"
    assert import_string("facerep.errors.ConfigError").__name__ == "ConfigError"
    with pytest.raises(PluginError, match=r"module 'facerep.errors' has no attribute 'Nope'"):
        import_string("facerep.errors:Nope")
    with pytest.raises(PluginError, match=r"invalid import string 'nodots'"):
        import_string("nodots")


# ---------------------------------------------------------------------------------------------
# collisions
# ---------------------------------------------------------------------------------------------


def test_same_qualified_name_from_two_distributions_names_both():
    registry = Registry()
    Registrar(registry, "dup", "fake-dup-a", "1.0").objective("toy", "pkg_a.mod:Toy")
    with pytest.raises(RegistrationCollisionError) as err:
        Registrar(registry, "dup", "fake-dup-b", "2.0").objective("toy", "pkg_b.mod:Toy")
    msg = str(err.value)
    assert "objective 'dup.toy' is registered twice" in msg
    assert "by fake-dup-a 1.0 (plugin 'dup', pkg_a.mod:Toy)" in msg
    assert "by fake-dup-b 2.0 (plugin 'dup', pkg_b.mod:Toy)" in msg
    assert isinstance(err.value, PluginError) and err.value.exit_code == 4
    # a different kind with the same name is not a collision
    Registrar(registry, "dup", "fake-dup-b", "2.0").dataset("toy", "pkg_b.mod:Toy")
    assert [s.dist for s in registry.specs()] == ["fake-dup-b", "fake-dup-a"]


DUP_ERROR = "plugin name 'dup' is provided by both fake-dup-a 1.0 and fake-dup-b 2.0; none of them is loaded; uninstall all but one"


def test_two_distributions_with_one_entry_point_name_are_both_skipped_naming_both(entry_point):
    a = entry_point("fake-dup-a", "1.0", "dup", plugin_module("fake_dup_a_plugin", _objective("x")))
    b = entry_point("fake-dup-b", "2.0", "dup", plugin_module("fake_dup_b_plugin", _objective("y")))
    good = entry_point("fake-good", "1.0", "good", plugin_module("fake_good_plugin", _objective("z")))
    with pytest.warns(RuntimeWarning) as record:
        plugins = load_plugins(entry_points=[a, b, good])
    messages = [str(w.message) for w in record]
    assert f"facerep plugin 'dup' from fake-dup-a 1.0 was skipped (collision): {DUP_ERROR}" in messages
    assert f"facerep plugin 'dup' from fake-dup-b 2.0 was skipped (collision): {DUP_ERROR}" in messages
    # neither claimant is trusted: both are recorded (with their own distribution) and skipped
    dups = [r for r in plugins.records if r.name == "dup"]
    assert [(r.dist, r.version, r.status, r.error) for r in dups] == [("fake-dup-a", "1.0", "collision", DUP_ERROR),
                                                                     ("fake-dup-b", "2.0", "collision", DUP_ERROR)]
    assert plugins.problems == dups
    assert [r.name for r in plugins.loaded] == ["core", "good"]
    # the unrelated plugin works; nothing of either claimant is registered (neither module was even imported)
    assert [s.name for s in plugins.registry.specs("objective")] == ["good.z"]
    assert plugins.get("objective", "z").name == "good.z"
    # asking for a component of the skipped name says why it is not there
    with pytest.raises(ComponentNotFoundError) as err:
        plugins.get("objective", "dup.x")
    assert str(err.value) == f"unknown objective 'dup.x': plugin 'dup' (fake-dup-a 1.0, fake-dup-b 2.0) was skipped: collision: {DUP_ERROR}"
    # an unknown short name lists the skipped plugins
    listed = "Skipped plugins: plugin 'dup' (fake-dup-a 1.0, fake-dup-b 2.0) was skipped: collision"
    with pytest.raises(ComponentNotFoundError, match=re.escape(listed)):
        plugins.get("objective", "x")
    # strict mode raises, naming both distributions
    with pytest.raises(RegistrationCollisionError) as err:
        load_plugins(entry_points=[a, b, good], strict=True)
    assert str(err.value) == f"facerep plugin 'dup' from fake-dup-a 1.0 (collision): {DUP_ERROR} [FACEREP_STRICT_PLUGINS is set]"
    assert isinstance(err.value, PluginError) and err.value.exit_code == 4
    # disabling the name is how a user silences it (in strict mode too): nothing is imported, nothing collides
    plugins = load_plugins(entry_points=[a, b, good], disable=["dup"], strict=True)
    assert [(r.name, r.status) for r in plugins.records] == [("core", "loaded"), ("dup", "disabled"), ("dup", "disabled"),
                                                             ("good", "loaded")]
    assert plugins.problems == []


def test_three_claimants_and_the_same_entry_point_listed_twice(entry_point):
    mods = [plugin_module(f"fake_tri_{i}_plugin", _objective("x")) for i in range(3)]
    eps = [entry_point(f"fake-tri-{i}", f"{i}.0", "tri", mods[i]) for i in range(3)]
    with pytest.warns(RuntimeWarning, match=r"provided by fake-tri-0 0.0, fake-tri-1 1.0 and fake-tri-2 2.0; none of them is loaded"):
        plugins = load_plugins(entry_points=eps)
    assert [r.status for r in plugins.records if r.name == "tri"] == ["collision"] * 3
    # one distribution seen twice on the path is one claimant, not a collision
    plugins = load_plugins(entry_points=[eps[0], eps[0]], strict=True)
    assert [(r.name, r.status) for r in plugins.records] == [("core", "loaded"), ("tri", "loaded")]


def test_a_distribution_claiming_core_is_skipped_and_core_stays(entry_point):
    c = entry_point("fake-core", "9.9", "core", plugin_module("fake_core_plugin", _objective("z")))
    with pytest.warns(RuntimeWarning, match=re.escape(
            "facerep plugin 'core' from fake-core 9.9 was skipped (collision): plugin name 'core' is provided by both "
            "facerep-core 0.1.0 and fake-core 9.9; 'core' is reserved for facerep-core; uninstall the other distribution")):
        plugins = load_plugins(entry_points=[c])
    assert [(r.name, r.dist, r.status) for r in plugins.records] == [("core", "facerep-core", "loaded"), ("core", "fake-core", "collision")]
    assert {s.name for s in plugins.registry.specs("backbone")} == {"core.pixels", "core.timm"}
    assert plugins.registry.specs("objective") == []  # no "core.z"
    # core is loaded, so an unknown core.* name is an ordinary unknown name
    with pytest.raises(ComponentNotFoundError, match=r"^unknown objective 'core.z'\. Registered objectives: none"):
        plugins.get("objective", "core.z")
    with pytest.raises(RegistrationCollisionError, match=r"plugin name 'core' is provided by both facerep-core 0.1.0 and fake-core 9.9"):
        load_plugins(entry_points=[c], strict=True)


def test_a_plugin_registering_a_name_twice_keeps_the_first_and_reports_the_duplicate(entry_point, capsys):
    from facerep.cli import main

    reg = lambda r: (_objective("x")(r), _objective("x", "other.mod:X")(r), _objective("y")(r))
    ep = entry_point("fake-twice", "0.3", "twice", plugin_module("fake_twice_plugin", reg))
    good = entry_point("fake-good", "1.0", "good", plugin_module("fake_good_plugin", _objective("z")))
    duplicate = ("objective 'twice.x' is registered twice: by fake-twice 0.3 (plugin 'twice', facerep.testing.toy:ToyContrastive) "
                 "and by fake-twice 0.3 (plugin 'twice', other.mod:X); a bug in fake-twice: report it to its authors")
    with pytest.warns(RuntimeWarning) as record:
        plugins = load_plugins(entry_points=[ep, good])
    assert [str(w.message) for w in record] == [
        "facerep plugin 'twice' from fake-twice 0.3 is loaded, but a registration was skipped "
        f"(duplicate registration skipped, the first is kept): {duplicate}"]
    twice = {r.name: r for r in plugins.records}["twice"]
    assert twice.status == "loaded"
    assert twice.error == f"duplicate registration skipped, the first is kept: {duplicate}"
    assert plugins.problems == [twice]
    # the first registration is kept, the plugin's other components and the other plugins work
    assert plugins.get("objective", "twice.x").target == "facerep.testing.toy:ToyContrastive"
    assert plugins.get("objective", "y").name == "twice.y"
    assert plugins.get("objective", "good.z").dist == "fake-good"
    # `facerep plugins check` fails on it, `facerep list` shows it and succeeds
    try:
        reset_plugins(plugins)
        assert main(["plugins", "check"]) == 1
        err = capsys.readouterr().err
        assert f"plugin twice (fake-twice 0.3): loaded: duplicate registration skipped, the first is kept: {duplicate}" in err
        assert main(["list"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"^twice\s+fake-twice 0.3\s+loaded\s+duplicate registration skipped", out, re.M)
    finally:
        reset_plugins(None)
    # strict mode raises, naming the distribution
    with pytest.raises(RegistrationCollisionError) as err:
        load_plugins(entry_points=[ep, good], strict=True)
    assert str(err.value) == f"{duplicate} [FACEREP_STRICT_PLUGINS is set]"


# ---------------------------------------------------------------------------------------------
# broken plugins: skipped and reported, or raised in strict mode
# ---------------------------------------------------------------------------------------------


def test_incompatible_api_version_is_reported_and_skipped(entry_point):
    old = entry_point("fake-old", "0.9", "old", plugin_module("fake_old_plugin", _objective("x"), api_version="2.3"))
    minor = entry_point("fake-minor", "0.1", "minor", plugin_module("fake_minor_plugin", _objective("y"), api_version="1.0"))
    newer = entry_point("fake-newer", "0.1", "newer", plugin_module("fake_newer_plugin", _objective("w"), api_version="1.99"))
    none = entry_point("fake-noinfo", "0.1", "noinfo", plugin_module("fake_noinfo_plugin", _objective("z"), api_version=None))
    with pytest.warns(RuntimeWarning) as record:
        plugins = load_plugins(entry_points=[old, minor, none, newer])
    assert _statuses(plugins) == {
        "core": "loaded", "minor": "loaded", "newer": "incompatible", "noinfo": "incompatible", "old": "incompatible",
    }
    by_name = {r.name: r for r in plugins.records}
    assert by_name["newer"].error == f"written for facerep API 1.99, newer than this core's {API_VERSION}; upgrade facerep-core"
    assert by_name["old"].error == f"written for facerep API 2.3, this core provides {API_VERSION}"
    assert by_name["noinfo"].error == "facerep_plugin_info() must return a dict with 'api_version'"
    messages = [str(w.message) for w in record]
    expected = (
        f"facerep plugin 'old' from fake-old 0.9 was skipped (incompatible): "
        f"written for facerep API 2.3, this core provides {API_VERSION}"
    )
    assert expected in messages
    assert {s.name for s in plugins.registry.specs("objective")} == {"minor.y"}  # nothing from the skipped ones
    assert plugins.problems == [by_name["newer"], by_name["noinfo"], by_name["old"]]


def test_import_failure_is_isolated(entry_point):
    bad = entry_point("fake-bad", "0.1", "bad", "facerep_no_such_module_anywhere")
    good = entry_point("fake-good", "1.0", "good", plugin_module("fake_good_plugin", _objective("x")))
    with pytest.warns(RuntimeWarning, match=re.escape(
            "facerep plugin 'bad' from fake-bad 0.1 was skipped (failed): import failed: ModuleNotFoundError: "
            "No module named 'facerep_no_such_module_anywhere'")):
        plugins = load_plugins(entry_points=[bad, good])
    assert _statuses(plugins) == {"core": "loaded", "bad": "failed", "good": "loaded"}
    assert plugins.get("objective", "x").name == "good.x"


def test_broken_register_is_isolated_and_leaves_nothing_registered(entry_point):
    def register(registrar):
        registrar.objective("half", "facerep.testing.toy:ToyContrastive")
        raise RuntimeError("boom")

    calls = []

    def paths():
        calls.append("broken")
        return []

    broken_mod = plugin_module("fake_broken_plugin", register)
    broken_mod.facerep_config_paths = hookimpl(paths)
    broken = entry_point("fake-broken", "0.2", "broken", broken_mod)
    good = entry_point("fake-good", "1.0", "good", plugin_module("fake_good_plugin", _objective("x")))
    with pytest.warns(RuntimeWarning, match=r"facerep plugin 'broken' from fake-broken 0.2 was skipped \(failed\): "
                                           r"facerep_register failed: RuntimeError: boom"):
        plugins = load_plugins(entry_points=[broken, good])
    assert _statuses(plugins) == {"core": "loaded", "broken": "failed", "good": "loaded"}
    assert [s.name for s in plugins.registry.specs("objective")] == ["good.x"]  # no "broken.half"
    with pytest.raises(ComponentNotFoundError):
        plugins.get("objective", "half")
    # the failed plugin's other hooks are not called any more
    plugins.manager.hook.facerep_config_paths()
    assert calls == []
    assert "broken" not in {r.name for r in plugins.loaded}


def test_invalid_component_name_fails_only_that_plugin(entry_point):
    ep = entry_point("fake-dotty", "0.1", "dotty", plugin_module("fake_dotty_plugin", _objective("a.b")))
    with pytest.warns(RuntimeWarning, match=r"invalid component name 'a.b'"):
        plugins = load_plugins(entry_points=[ep])
    assert _statuses(plugins)["dotty"] == "failed"
    registry = Registry()
    with pytest.raises(PluginError, match=r"registered unknown kind 'loss'; kinds: dataset, backbone, objective"):
        Registrar(registry, "p", "fake-p", "1").add("loss", "x", "pkg.mod:X")
    with pytest.raises(PluginError, match=r"target 'NotAnImportString' is not an import string"):
        Registrar(registry, "p", "fake-p", "1").objective("x", "NotAnImportString")


def test_strict_mode_raises_plugin_error(entry_point, monkeypatch):
    bad = entry_point("fake-bad", "0.1", "bad", "facerep_no_such_module_anywhere")
    with pytest.raises(PluginError) as err:
        load_plugins(entry_points=[bad], strict=True)
    assert str(err.value) == ("facerep plugin 'bad' from fake-bad 0.1 (failed): import failed: ModuleNotFoundError: "
                              "No module named 'facerep_no_such_module_anywhere' [FACEREP_STRICT_PLUGINS is set]")
    assert isinstance(err.value.__cause__, ModuleNotFoundError)
    old = entry_point("fake-old", "0.9", "old", plugin_module("fake_old_plugin", api_version="2.0"))
    monkeypatch.setenv("FACEREP_STRICT_PLUGINS", "1")  # the environment switch, as plugin authors use it
    with pytest.raises(PluginError, match=r"'old' from fake-old 0.9 \(incompatible\)"):
        load_plugins(entry_points=[old])
    with pytest.warns(RuntimeWarning):  # an explicit argument wins over the environment
        assert _statuses(load_plugins(entry_points=[old], strict=False))["old"] == "incompatible"


# ---------------------------------------------------------------------------------------------
# switches
# ---------------------------------------------------------------------------------------------


def test_disable_and_only_switches(entry_point, monkeypatch):
    # "bad" cannot even be imported: disabling it must not try
    bad = entry_point("fake-bad", "0.1", "bad", "facerep_no_such_module_anywhere")
    a = entry_point("fake-alpha", "1.0", "alpha", plugin_module("fake_alpha_plugin", _objective("x")))
    b = entry_point("fake-beta", "1.0", "beta", plugin_module("fake_beta_plugin", _objective("y")))
    eps = [bad, a, b]

    plugins = load_plugins(entry_points=eps, disable=["bad", "beta"], strict=True)
    assert _statuses(plugins) == {"core": "loaded", "bad": "disabled", "alpha": "loaded", "beta": "disabled"}
    assert [s.name for s in plugins.registry.specs("objective")] == ["alpha.x"]
    disabled = {r.name: r for r in plugins.records}["beta"]
    assert (disabled.dist, disabled.version) == ("fake-beta", "1.0")

    plugins = load_plugins(entry_points=eps, only=["beta"], strict=True)
    assert _statuses(plugins) == {"core": "loaded", "bad": "disabled", "alpha": "disabled", "beta": "loaded"}
    assert load_plugins(entry_points=eps, only=[], strict=True).loaded[0].name == "core"  # core always loads
    assert [r.name for r in load_plugins(entry_points=eps, only=[], strict=True).loaded] == ["core"]

    monkeypatch.setenv("FACEREP_DISABLE_PLUGINS", " bad , alpha ")
    assert _statuses(load_plugins(entry_points=eps, strict=True)) == {"core": "loaded", "bad": "disabled", "alpha": "disabled",
                                                                      "beta": "loaded"}
    monkeypatch.delenv("FACEREP_DISABLE_PLUGINS")
    monkeypatch.setenv("FACEREP_PLUGINS", "alpha")
    assert [r.name for r in load_plugins(entry_points=eps, strict=True).loaded] == ["core", "alpha"]
    # explicit arguments win over the environment
    assert [r.name for r in load_plugins(entry_points=eps, only=["beta"], strict=True).loaded] == ["core", "beta"]


def test_extra_plugins_and_the_process_wide_set(entry_point):
    mod = plugin_module("fake_extra_plugin", _objective("x"), summary="extra one")
    plugins = load_plugins(entry_points=[], extra=[("mine", mod)])
    record = {r.name: r for r in plugins.records}["mine"]
    assert (record.dist, record.status, record.summary) == ("<local>", "loaded", "extra one")
    assert plugins.get("objective", "x").name == "mine.x"
    assert [m["name"] for m in plugins.manifest()] == ["core", "mine"]
    try:
        reset_plugins(plugins)
        assert get_plugins() is plugins
        reset_plugins(None)
        assert get_plugins() is not plugins
        assert get_plugins() is get_plugins()  # discovered once, then cached
    finally:
        reset_plugins(None)


def test_an_extra_plugin_never_replaces_an_installed_one(entry_point):
    installed = entry_point("fake-alpha", "1.0", "alpha", plugin_module("fake_alpha_plugin", _objective("x")))
    local = plugin_module("fake_local_alpha", _objective("y"))
    error = "plugin name 'alpha' is provided by both fake-alpha 1.0 and <local> 0; none of them is loaded; uninstall all but one"
    with pytest.warns(RuntimeWarning, match=re.escape(error)):
        plugins = load_plugins(entry_points=[installed], extra=[("alpha", local)])
    assert [(r.name, r.dist, r.status) for r in plugins.records] == [("core", "facerep-core", "loaded"),
                                                                    ("alpha", "fake-alpha", "collision"),
                                                                    ("alpha", "<local>", "collision")]
    assert plugins.registry.specs("objective") == []  # neither the installed nor the local one
    with pytest.raises(ComponentNotFoundError, match=re.escape(
            "unknown objective 'alpha.y': plugin 'alpha' (fake-alpha 1.0, <local> 0) was skipped")):
        plugins.get("objective", "alpha.y")
    with pytest.raises(RegistrationCollisionError, match=r"plugin name 'alpha' is provided by both fake-alpha 1.0 and <local> 0"):
        load_plugins(entry_points=[installed], extra=[("alpha", local)], strict=True)
    with pytest.raises(RegistrationCollisionError, match=r"plugin name 'core' is provided by both facerep-core 0.1.0 and <local>"):
        load_plugins(entry_points=[], extra=[("core", local)], strict=True)
    with pytest.warns(RuntimeWarning, match=r"'core' is reserved for facerep-core"):
        assert [r.status for r in load_plugins(entry_points=[], extra=[("core", local)]).records] == ["loaded", "collision"]


def test_a_component_of_a_skipped_plugin_says_the_plugin_was_skipped_and_why(entry_point):
    from facerep.build import resolve
    from facerep.config import ComponentConfig

    old = entry_point("fake-frl", "0.1.0", "frl", plugin_module("fake_frl_plugin", _objective("swav"), api_version="2.0"))
    bad = entry_point("fake-bad", "0.1", "bad", "facerep_no_such_module_anywhere")
    off = entry_point("fake-off", "0.2", "off", plugin_module("fake_off_plugin", _objective("thing")))
    good = entry_point("fake-good", "1.0", "good", plugin_module("fake_good_plugin", _objective("z")))
    with pytest.warns(RuntimeWarning):
        plugins = load_plugins(entry_points=[old, bad, off, good], disable=["off"])
    incompatible = f"plugin 'frl' (fake-frl 0.1.0) was skipped: incompatible: written for facerep API 2.0, this core provides {API_VERSION}"
    with pytest.raises(ComponentNotFoundError) as err:
        plugins.get("objective", "frl.swav")
    assert str(err.value) == f"unknown objective 'frl.swav': {incompatible}"
    # through a config, with the config path in front
    with pytest.raises(ComponentNotFoundError) as err:
        resolve("objective", ComponentConfig("frl.swav"), "objective", plugins)
    assert str(err.value) == f"objective.name: unknown objective 'frl.swav': {incompatible}"
    with pytest.raises(ComponentNotFoundError, match=re.escape(
            "unknown dataset 'bad.d': plugin 'bad' (fake-bad 0.1) was skipped: failed: import failed: ModuleNotFoundError")):
        plugins.get("dataset", "bad.d")
    with pytest.raises(ComponentNotFoundError, match=re.escape(
            "unknown objective 'off.thing': plugin 'off' (fake-off 0.2) was skipped: "
            "disabled (FACEREP_DISABLE_PLUGINS / FACEREP_PLUGINS)")):
        plugins.get("objective", "off.thing")
    # a short name no loaded plugin has: the usual message, plus every skipped plugin and why
    with pytest.raises(ComponentNotFoundError) as err:
        plugins.get("objective", "swav")
    msg = str(err.value)
    assert msg.startswith("unknown objective 'swav'. Registered objectives: good.z. Installed plugins: core (facerep-core 0.1.0), "
                          "good (fake-good 1.0). Skipped plugins: ")
    assert incompatible in msg and "plugin 'bad' (fake-bad 0.1) was skipped: failed" in msg and "plugin 'off' (fake-off 0.2)" in msg
    # a plugin that failed while registering counts as skipped too
    broken = entry_point("fake-broken", "0.2", "broken", plugin_module("fake_broken_plugin", lambda r: 1 / 0))
    with pytest.warns(RuntimeWarning):
        plugins = load_plugins(entry_points=[broken])
    with pytest.raises(ComponentNotFoundError, match=re.escape(
            "plugin 'broken' (fake-broken 0.2) was skipped: failed: facerep_register failed: ZeroDivisionError")):
        plugins.get("objective", "broken.x")


def test_a_component_that_cannot_be_imported_is_reported_naming_it_and_its_distribution(entry_point, capsys):
    from facerep.build import resolve
    from facerep.cli import main
    from facerep.config import ComponentConfig

    def register(registrar):
        registrar.dataset("d", "facerep_no_such_module_anywhere.sub:D", params="facerep_no_such_module_anywhere.sub:P")
        registrar.protocol("p", "facerep.errors:Nope")

    ep = entry_point("fake-needs-dep", "0.4", "needsdep", plugin_module("fake_needs_dep_plugin", register))
    plugins = load_plugins(entry_points=[ep], strict=True)  # registering imports nothing, so this loads
    assert _statuses(plugins)["needsdep"] == "loaded"
    missing = ("dataset needsdep.d (fake-needs-dep 0.4): cannot import 'facerep_no_such_module_anywhere.sub:P': "
               "ModuleNotFoundError: No module named 'facerep_no_such_module_anywhere'")
    with pytest.raises(PluginError) as err:
        resolve("dataset", ComponentConfig("needsdep.d"), "data", plugins)
    assert str(err.value) == missing and isinstance(err.value.__cause__, ModuleNotFoundError)
    with pytest.raises(PluginError, match=re.escape(
            "protocol needsdep.p (fake-needs-dep 0.4): cannot import 'facerep.errors:Nope': import string 'facerep.errors:Nope': "
            "module 'facerep.errors' has no attribute 'Nope'")):
        plugins.get("protocol", "p").load()
    try:
        reset_plugins(plugins)
        assert main(["plugins", "check"]) == 1
    finally:
        reset_plugins(None)
    err_lines = capsys.readouterr().err.splitlines()
    assert missing.replace(":P'", ":D'") in err_lines
    assert any(line.startswith("protocol needsdep.p (fake-needs-dep 0.4): cannot import 'facerep.errors:Nope'") for line in err_lines)
