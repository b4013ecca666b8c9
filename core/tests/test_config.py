"""Run configs: structuring, field-path errors, overrides, inheritance, per-component params."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from facerep.build import resolve, resolve_run
from facerep.config import (
    ComponentConfig,
    EvalConfig,
    RunConfig,
    apply_overrides,
    load_config,
    read_yaml,
    structure,
    unstructure,
)
from facerep.errors import ComponentNotFoundError, ConfigError

EVAL = {
    "protocol": {"name": "core.knn"},
    "train": {"name": "core.image_folder"},
    "test": {"name": "core.image_folder"},
    "label": "expression",
}


def _error(data: object, cls: type = RunConfig, **kw: object) -> str:
    with pytest.raises(ConfigError) as err:
        structure(data, cls, **kw)
    return str(err.value)


def _write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------------------
# structuring and the field path in errors
# ---------------------------------------------------------------------------------------------


def test_structures_nested_sections_with_yaml_friendly_numbers():
    cfg = structure({
        "name": "x",
        "train": {"max_steps": 7, "optimizer": {"type": "sgd", "lr": 1, "betas": [0.8, 0.9]}, "grad_clip": "1e-1"},
        "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
        "evaluate": [EVAL],
    }, RunConfig)
    assert cfg.train.max_steps == 7 and cfg.train.batch_size == 32  # default kept
    assert cfg.train.optimizer.lr == 1.0 and isinstance(cfg.train.optimizer.lr, float)
    assert cfg.train.optimizer.betas == (0.8, 0.9)
    assert cfg.train.grad_clip == pytest.approx(0.1)  # YAML 1.1 reads 1e-1 as a string
    assert cfg.backbone == ComponentConfig("core.timm", {"model": "resnet10t"})
    assert cfg.evaluate[0] == EvalConfig(protocol=ComponentConfig("core.knn"), train=ComponentConfig("core.image_folder"),
                                         test=ComponentConfig("core.image_folder"), label="expression")
    assert structure(unstructure(cfg), RunConfig) == cfg
    assert structure(None, RunConfig) == RunConfig()


def test_unknown_key_is_named_by_its_full_dotted_path():
    msg = _error({"train": {"optimizer": {"lrr": 0.1}}}, source="exp.yaml")
    assert msg.startswith("exp.yaml: invalid config:")
    assert "train.optimizer.lrr: unknown key(s) lrr (allowed: type, lr, weight_decay," in msg
    assert "evaluate.0.labell: unknown key(s) labell" in _error({"evaluate": [{**EVAL, "labell": "x"}]})
    assert "evaluate.1.train.oops: unknown key(s) oops (allowed: name, params)" in _error(
        {"evaluate": [EVAL, {**EVAL, "train": {"name": "a", "oops": 1}}]})
    assert "trian: unknown key(s) trian (allowed: name, seed," in _error({"trian": {}})


def test_every_bad_field_is_reported_not_just_the_first():
    msg = _error({"train": {"max_steps": "ten", "optimizer": {"lr": "fast"}}, "seed": "x"})
    lines = msg.splitlines()[1:]
    paths = sorted(line.strip().split(":")[0] for line in lines)
    assert paths == ["seed", "train.max_steps", "train.optimizer.lr"]


def test_wrong_types_name_the_path():
    assert re.search(r"^  train\.max_steps: ValueError: invalid literal for int\(\) .*'ten'", _error({"train": {"max_steps": "ten"}}), re.M)
    assert "train.optimizer.lr: expected a number, got True" in _error({"train": {"optimizer": {"lr": True}}})
    assert "train.optimizer.lr: expected a number, got 'fast'" in _error({"train": {"optimizer": {"lr": "fast"}}})
    assert "train.optimizer.lr: expected a number, got [0.1]" in _error({"train": {"optimizer": {"lr": [0.1]}}})
    assert "train.precision:" in _error({"train": {"precision": "fp8"}}) and "fp8" in _error({"train": {"precision": "fp8"}})
    assert "train.optimizer.betas:" in _error({"train": {"optimizer": {"betas": [0.9]}}})
    assert "evaluate.0:" in _error({"evaluate": ["core.knn"]})
    msg = _error({"train": []})
    assert "train:" in msg


def test_missing_required_field_names_it_once():
    msg = _error({"evaluate": [{k: v for k, v in EVAL.items() if k != "test"}]})
    assert msg.splitlines()[1] == "  evaluate.0.test: required field is missing"
    assert _error({"data": {"params": {}}}).splitlines()[1] == "  data.name: required field is missing"
    assert _error({}, EvalConfig).splitlines()[1:] == [f"  {f}: required field is missing" for f in ("train", "test")]


def test_top_level_must_be_a_mapping():
    assert _error(["a"], RunConfig, path="") == "<root>: expected a mapping for RunConfig, got list"


# ---------------------------------------------------------------------------------------------
# -o overrides
# ---------------------------------------------------------------------------------------------


def test_overrides_set_nested_fields_with_yaml_typed_values():
    raw = {"name": "a", "train": {"max_steps": 5, "optimizer": {"lr": 0.1}}, "evaluate": [dict(EVAL)]}
    out = apply_overrides(raw, [
        "train.max_steps=12",
        "train.optimizer.lr=1e-3",  # a string in YAML 1.1; the float field converts it
        "train.grad_clip=null",
        "train.optimizer.betas=[0.8, 0.95]",
        "train.channels_last=false",
        "evaluate.0.label=identity",
        "evaluate.0.protocol.params.k=5",
        "backbone.params.model=resnet10t",  # creates the missing blocks
        "name=with=equals",
    ])
    assert out["train"]["max_steps"] == 12
    assert out["train"]["grad_clip"] is None and out["train"]["channels_last"] is False
    assert out["train"]["optimizer"]["betas"] == [0.8, 0.95]
    assert out["evaluate"][0]["label"] == "identity" and out["evaluate"][0]["protocol"]["params"] == {"k": 5}
    assert out["backbone"] == {"params": {"model": "resnet10t"}}
    assert out["name"] == "with=equals"
    assert raw["train"]["max_steps"] == 5 and raw["evaluate"][0]["label"] == "expression"  # input untouched
    cfg = structure({**out, "backbone": {"name": "core.timm", **out["backbone"]}}, RunConfig)
    assert cfg.train.optimizer.lr == pytest.approx(1e-3)
    assert cfg.train.optimizer.betas == (0.8, 0.95)
    # a whole list element can be replaced too
    assert apply_overrides({"evaluate": [1, 2]}, ["evaluate.1=3"]) == {"evaluate": [1, 3]}


@pytest.mark.parametrize("override, message", [
    ("train.max_steps", "override 'train.max_steps' is not of the form key.path=value"),
    ("=3", "override '=3' is not of the form key.path=value"),
    ("evaluate.3.label=x", "override 'evaluate.3.label=x': evaluate.3 is not a valid list index"),
    ("evaluate.first.label=x", "override 'evaluate.first.label=x': evaluate.first is not a valid list index"),
    ("evaluate.5=x", "override 'evaluate.5=x': evaluate.5 is not a valid list index"),
    ("train.max_steps.x=1", "override 'train.max_steps.x=1': train.max_steps is not a mapping"),
    ("train.max_steps.x.y=1", "override 'train.max_steps.x.y=1': train.max_steps is not a mapping"),
])
def test_bad_overrides_are_config_errors(override, message):
    raw = {"train": {"max_steps": 5}, "evaluate": [dict(EVAL)]}
    with pytest.raises(ConfigError) as err:
        apply_overrides(raw, [override])
    assert str(err.value) == message


def test_override_of_unknown_field_is_caught_by_structuring(tmp_path):
    path = _write(tmp_path / "c.yaml", {"train": {"max_steps": 5}})
    with pytest.raises(ConfigError, match=r"train\.max_stepz: unknown key"):
        load_config(path, ["train.max_stepz=3"])
    cfg, raw = load_config(path, ["train.max_steps=3"])
    assert cfg.train.max_steps == 3 and raw["train"]["max_steps"] == 3


# ---------------------------------------------------------------------------------------------
# files: base inheritance, malformed YAML
# ---------------------------------------------------------------------------------------------


def test_base_inheritance_deep_merges_and_overrides_apply_last(tmp_path):
    _write(tmp_path / "root.yaml", {"seed": 7, "train": {"log_every": 3}})
    _write(tmp_path / "base.yaml", {
        "base": "root.yaml",
        "name": "base",
        "train": {"max_steps": 10, "batch_size": 8, "optimizer": {"type": "sgd", "lr": 0.1}},
        "evaluate": [EVAL, EVAL],
    })
    sub = tmp_path / "exp"
    sub.mkdir()
    child = _write(sub / "child.yaml", {"base": "../base.yaml", "name": "child", "train": {"optimizer": {"lr": 0.2}}, "evaluate": [EVAL]})
    cfg, raw = load_config(child, ["train.batch_size=4"])
    assert cfg.name == "child" and cfg.seed == 7
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.train.log_every) == (10, 4, 3)
    assert (cfg.train.optimizer.type, cfg.train.optimizer.lr) == ("sgd", 0.2)
    assert len(cfg.evaluate) == 1  # lists are replaced, not concatenated
    assert "base" not in raw


def test_base_component_block_naming_another_component_is_replaced_not_merged(tmp_path):
    _write(tmp_path / "base.yaml", {"name": "b", "data": {"name": "core.synthetic", "params": {"n": 8, "size": 32}},
                                    "backbone": {"name": "core.timm", "params": {"model": "resnet18", "layers": [2]}}})
    child = _write(tmp_path / "child.yaml", {"base": "base.yaml", "name": "c",
                                             "data": {"name": "core.image_folder", "params": {"roots": ["x"]}},
                                             "backbone": {"params": {"model": "resnet10t"}}})
    cfg, _ = load_config(child)
    assert cfg.name == "c"  # the root is merged, whatever its name
    assert cfg.data.name == "core.image_folder" and cfg.data.params == {"roots": ["x"]}  # nothing of synthetic's params
    assert cfg.backbone.params == {"model": "resnet10t", "layers": [2]}  # same component: params merge


def test_base_can_name_a_plugin_preset(tmp_path, local_plugins):
    from facerep.config import find_config

    preset_dir = tmp_path / "presets"
    preset_dir.mkdir()
    _write(preset_dir / "p.yaml", {"name": "preset", "seed": 11, "train": {"max_steps": 3}})
    import types

    from facerep.hookspecs import hookimpl
    from facerep.plugins import load_plugins, reset_plugins

    mod = types.ModuleType("preset_plugin")
    mod.facerep_plugin_info = hookimpl(lambda: {"api_version": "1.0"})
    mod.facerep_config_paths = hookimpl(lambda: [preset_dir])
    reset_plugins(load_plugins(entry_points=[], extra=[("pre", mod)]))
    assert find_config("pre/p") == preset_dir / "p.yaml"
    child = _write(tmp_path / "child.yaml", {"base": "pre/p", "name": "child"})
    cfg, _ = load_config(child)
    assert (cfg.name, cfg.seed, cfg.train.max_steps) == ("child", 11, 3)
    with pytest.raises(ConfigError, match=r"config not found: pre/q .*presets: core/vit_cpu, pre/p"):
        find_config("pre/q")


def test_missing_base_names_the_file(tmp_path):
    child = _write(tmp_path / "child.yaml", {"base": "nope.yaml"})
    with pytest.raises(ConfigError, match=re.escape(f"config file not found: {tmp_path / 'nope.yaml'}")):
        read_yaml(child)


def test_malformed_yaml_names_the_file(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "train: {max_steps: 3\nname: [x\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value).startswith(f"{bad}: not valid YAML:")
    assert "line" in str(err.value)
    top = _write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match=re.escape(f"{top}: the top level must be a mapping, got list")):
        load_config(top)
    with pytest.raises(ConfigError, match=re.escape(f"config file not found: {tmp_path / 'absent.yaml'}")):
        load_config(tmp_path / "absent.yaml")
    assert load_config(_write(tmp_path / "empty.yaml", ""))[0] == RunConfig()


def test_structuring_errors_from_a_file_name_the_file(tmp_path):
    path = _write(tmp_path / "exp.yaml", {"train": {"optimizer": {"lrr": 1}}})
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid config:\n  train.optimizer.lrr: unknown key(s) lrr")):
        load_config(path)


def test_yaml_is_data_only(tmp_path):
    path = _write(tmp_path / "evil.yaml", "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


# ---------------------------------------------------------------------------------------------
# component params: structured into the class each component registered
# ---------------------------------------------------------------------------------------------


def test_backbone_params_are_checked_against_the_registered_class(local_plugins):
    from facerep.backbones.timm_backbone import TimmBackboneParams

    r = resolve("backbone", ComponentConfig("core.timm", {"model": "resnet10t", "layers": [1, 2]}), "backbone", local_plugins)
    assert r.params == TimmBackboneParams(model="resnet10t", layers=(1, 2))
    assert (r.kind, r.path, r.spec.name, r.spec.dist) == ("backbone", "backbone", "core.timm", "facerep-core")
    with pytest.raises(ConfigError) as err:
        resolve("backbone", ComponentConfig("core.timm", {"modle": "resnet18"}), "backbone", local_plugins)
    assert "backbone.params.modle: unknown key(s) modle (allowed: model, img_size," in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve("backbone", ComponentConfig("core.timm", {"layers": [1, "x"], "mean": [1, 2]}), "backbone", local_plugins)
    assert "backbone.params.layers.1: ValueError" in str(err.value)
    assert "backbone.params.mean: ValueError: Not enough values" in str(err.value)


def test_plugin_objective_params_errors_name_objective_params(local_plugins):
    r = resolve("objective", ComponentConfig("toy", {"temperature": 1, "crop": 20}), "objective", local_plugins)
    assert r.spec.name == "local.toy" and r.params.temperature == 1.0 and r.params.crop == 20
    with pytest.raises(ConfigError, match=r"objective\.params\.temprature: unknown key\(s\) temprature \(allowed: out_dim, temperature"):
        resolve("objective", ComponentConfig("local.toy", {"temprature": 0.1}), "objective", local_plugins)
    with pytest.raises(ConfigError, match=r"objective\.params\.crop: ValueError"):
        resolve("objective", ComponentConfig("local.toy", {"crop": "big"}), "objective", local_plugins)


def test_component_without_params_class_rejects_params():
    import types

    from facerep.hookspecs import hookimpl
    from facerep.plugins import load_plugins

    mod = types.ModuleType("facerep_test_bare_plugin")
    mod.facerep_plugin_info = hookimpl(lambda: {"api_version": "1.0"})
    mod.facerep_register = hookimpl(lambda registrar: registrar.protocol("bare", "facerep.eval.knn:KNNProbe"))
    plugins = load_plugins(entry_points=[], extra=[("p", mod)], strict=True)
    assert resolve("protocol", ComponentConfig("p.bare"), "evaluate.0.protocol", plugins).params is None
    with pytest.raises(ConfigError, match=re.escape("evaluate.0.protocol.params: p.bare takes no parameters, got ['k']")):
        resolve("protocol", ComponentConfig("p.bare", {"k": 3}), "evaluate.0.protocol", plugins)


def test_unknown_component_error_names_the_config_path(local_plugins):
    with pytest.raises(ComponentNotFoundError) as err:
        resolve("dataset", ComponentConfig("core.imagefolder"), "evaluate.0.train", local_plugins)
    assert str(err.value).startswith("evaluate.0.train.name: unknown dataset 'core.imagefolder'. did you mean: core.image_folder")


def test_resolve_run_orders_components_and_requires_data_for_pretraining(local_plugins):
    cfg = structure({
        "data": {"name": "local.noise"}, "backbone": {"name": "core.timm"}, "objective": {"name": "local.toy"},
        "evaluate": [{"protocol": {"name": "core.knn", "params": {"k": 3}}, "train": {"name": "local.noise"},
                      "test": {"name": "local.noise", "params": {"seed": 1}}, "label": "expression"}],
    }, RunConfig)
    got = [(r.path, r.kind, r.spec.name) for r in resolve_run(cfg, local_plugins)]
    assert got == [("data", "dataset", "local.noise"), ("backbone", "backbone", "core.timm"), ("objective", "objective", "local.toy"),
                   ("evaluate.0.protocol", "protocol", "core.knn"), ("evaluate.0.train", "dataset", "local.noise"),
                   ("evaluate.0.test", "dataset", "local.noise")]
    no_data = structure({"backbone": {"name": "core.timm"}, "objective": {"name": "local.toy"}}, RunConfig)
    with pytest.raises(ConfigError, match=r"^data: required when 'objective' is set$"):
        resolve_run(no_data, local_plugins)


# ---------------------------------------------------------------------------------------------
# image folder roots: a bare string or a mapping
# ---------------------------------------------------------------------------------------------


def test_folder_root_accepts_a_string_or_a_mapping():
    from facerep.data.folder import FolderRoot, ImageFolderParams

    p = structure({"roots": ["/data/a", {"path": "/data/b", "start": 2, "stop": 5}], "labels": "folder"}, ImageFolderParams)
    assert p.roots == (FolderRoot("/data/a"), FolderRoot("/data/b", 2, 5))
    assert structure(unstructure(p), ImageFolderParams) == p
    msg = _error({"roots": [3]}, ImageFolderParams, path="data.params")
    assert "data.params.roots.0: TypeError: expected a folder path or {path, start, stop}, got 3" in msg
    msg = _error({"roots": [{"path": "/a", "begin": 1}]}, ImageFolderParams, path="data.params")
    assert "data.params.roots.0.begin: unknown key(s) begin (allowed: path, start, stop)" in msg
    assert "data.params.roots: required field is missing" in _error({}, ImageFolderParams, path="data.params")
