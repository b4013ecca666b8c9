"""Config validation: strict ints and lists, value checks with field paths, close matches for
unknown keys, YAML pitfalls (duplicate keys, encodings, circular bases), unknown timm models, and
the params descriptions behind ``facerep show`` / ``--dry-run``."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import attrs
import pytest
import yaml

from facerep import cli
from facerep.build import resolve
from facerep.config import (
    ComponentConfig,
    FieldError,
    OptimizerConfig,
    TrainConfig,
    at_least,
    each,
    in_range,
    load_config,
    non_negative,
    positive,
    structure,
)
from facerep.describe import FieldDoc, describe_params, field_docs, format_params, format_resolved
from facerep.errors import ConfigError
from facerep.hookspecs import API_VERSION, hookimpl


def _write(path: Path, data: object) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _load_error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    return str(err.value)


def _problems(message: str) -> list[str]:
    """The field lines of an ``invalid config:`` message."""
    return [line.strip() for line in message.splitlines()[1:]]


def _cli(capsys: pytest.CaptureFixture[str], path: Path, *overrides: str) -> tuple[int, str]:
    argv = ["run", str(path), "--dry-run", "--no-cost"]
    for o in overrides:
        argv += ["-o", o]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, err


# a plugin whose params use the public validators (and a tuple-of-ints field)


@attrs.frozen
class ProjParams:
    """Attributes:
    temperature: softmax temperature.
    projector: hidden and output widths of the projection MLP.
    """

    temperature: float = attrs.field(default=0.1, validator=positive)
    projector: tuple[int, ...] = attrs.field(default=(64, 32), validator=each(at_least(1)))
    #: EMA momentum of the target network,
    #: in [0, 1).
    momentum: float = attrs.field(default=0.99, validator=in_range(0, 1))
    queue: int | None = attrs.field(default=None, validator=non_negative)  #: negatives kept (None: no queue)
    crop: int = 24  # pixels


@pytest.fixture
def proj_plugins():
    """Core plus a plugin ``p`` with objective ``p.proj`` (params: :class:`ProjParams`)."""
    from facerep.plugins import load_plugins, reset_plugins

    holder = types.ModuleType("facerep_validation_test_params")
    holder.ProjParams = ProjParams
    sys.modules[holder.__name__] = holder
    mod = types.ModuleType("facerep_validation_test_plugin")
    mod.facerep_plugin_info = hookimpl(lambda: {"api_version": API_VERSION})
    mod.facerep_register = hookimpl(lambda registrar: registrar.objective(
        "proj", "facerep.testing.toy:ToyContrastive", params="facerep_validation_test_params:ProjParams"))
    plugins = load_plugins(entry_points=[], extra=[("p", mod)])
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)
    del sys.modules[holder.__name__]


@attrs.frozen
class Even:
    n: int = attrs.field(default=2)

    @n.validator
    def _even(self, attribute, value):
        if value % 2:
            raise FieldError("must be even", field=attribute.name)


@attrs.frozen
class Outer:
    inner: tuple[Even, ...] = ()


PRETRAIN = {
    "name": "t",
    "data": {"name": "core.image_folder", "params": {"roots": ["faces"]}},
    "backbone": {"name": "core.timm", "params": {"model": "resnet10t"}},
    "objective": {"name": "p.proj"},
}


# ---------------------------------------------------------------------------------------------
# 1. ints reject non-integral floats and bools
# ---------------------------------------------------------------------------------------------


def test_int_fields_reject_fractional_floats_and_bools(tmp_path):
    path = _write(tmp_path / "c.yaml", {"train": {"batch_size": 4.7}})
    assert _problems(_load_error(path)) == ["train.batch_size: expected an integer, got 4.7"]
    path = _write(tmp_path / "c.yaml", {"train": {"batch_size": True, "max_steps": "12.5"}})
    assert sorted(_problems(_load_error(path))) == ["train.batch_size: expected an integer, got True",
                                                    "train.max_steps: expected an integer, got '12.5'"]
    path = _write(tmp_path / "c.yaml", "train: {batch_size: 4.0, max_steps: 1e3, log_every: '5'}\nseed: 3\n")
    cfg, _ = load_config(path)
    assert (cfg.train.batch_size, cfg.train.max_steps, cfg.train.log_every, cfg.seed) == (4, 1000, 5, 3)
    assert all(type(v) is int for v in (cfg.train.batch_size, cfg.train.max_steps, cfg.train.log_every))


def test_bool_fields_reject_words_that_bool_would_call_true(tmp_path):
    path = _write(tmp_path / "c.yaml", {"train": {"channels_last": "maybe", "deterministic": 3}})
    assert sorted(_problems(_load_error(path))) == ["train.channels_last: expected true or false, got str 'maybe'",
                                                    "train.deterministic: expected true or false, got int 3"]
    cfg, _ = load_config(_write(tmp_path / "c.yaml", {}), ["train.channels_last=false", "compare_random_init=yes"])
    assert cfg.train.channels_last is False and cfg.compare_random_init is True


def test_fractional_batch_size_through_the_cli_exits_2(tmp_path, capsys, local_plugins):
    path = _write(tmp_path / "c.yaml", {"train": {"batch_size": 4.7}})
    rc, err = _cli(capsys, path)
    assert rc == 2
    assert "train.batch_size: expected an integer, got 4.7" in err and str(path) in err


# ---------------------------------------------------------------------------------------------
# 2. a bare string where a list is expected
# ---------------------------------------------------------------------------------------------


def test_a_string_for_a_list_is_one_error_not_one_per_character(tmp_path, proj_plugins):
    cfg, _ = load_config(_write(tmp_path / "c.yaml", {**PRETRAIN, "data": {"name": "core.image_folder", "params": {"roots": "faces"}}}))
    with pytest.raises(ConfigError) as err:
        resolve("dataset", cfg.data, "data", proj_plugins)
    assert _problems(str(err.value)) == ["data.params.roots: expected a list, got the string 'faces' (write [faces])"]

    cfg, _ = load_config(_write(tmp_path / "c.yaml", PRETRAIN), ["objective.params.projector=abc"])
    with pytest.raises(ConfigError) as err:
        resolve("objective", cfg.objective, "objective", proj_plugins)
    assert _problems(str(err.value)) == ["objective.params.projector: expected a list, got the string 'abc' (write [abc])"]
    # what the user probably meant, and the hint for it
    cfg, _ = load_config(_write(tmp_path / "c.yaml", PRETRAIN), ["objective.params.projector=[128, 64]"])
    assert resolve("objective", cfg.objective, "objective", proj_plugins).params.projector == (128, 64)
    msg = str(pytest.raises(ConfigError, structure, {"projector": "128,64"}, ProjParams, path="objective.params").value)
    assert "(write [128, 64])" in msg


def test_lists_in_core_sections_reject_strings_mappings_and_scalars(tmp_path):
    path = _write(tmp_path / "c.yaml", {"required_plugins": "facerep-frl", "evaluate": {"label": "x"},
                                        "train": {"optimizer": {"betas": 0.9, "no_decay": "bias"}}})
    assert sorted(_problems(_load_error(path))) == [
        "evaluate: expected a list, got a mapping {'label': 'x'}",
        "required_plugins: expected a list, got the string 'facerep-frl' (write [facerep-frl])",
        "train.optimizer.betas: expected a list, got float 0.9 (write [0.9])",
        "train.optimizer.no_decay: expected a list, got the string 'bias' (write [bias])",
    ]
    cfg, _ = load_config(_write(tmp_path / "ok.yaml", {"required_plugins": ["facerep-frl"], "train": {"optimizer": {"no_decay": []}}}))
    assert cfg.required_plugins == ("facerep-frl",) and cfg.train.optimizer.no_decay == ()


def test_string_roots_and_projector_through_the_cli_exit_2(tmp_path, capsys, proj_plugins):
    path = _write(tmp_path / "c.yaml", {**PRETRAIN, "data": {"name": "core.image_folder", "params": {"roots": "faces"}}})
    rc, err = _cli(capsys, path)
    assert rc == 2 and "data.params.roots: expected a list, got the string 'faces' (write [faces])" in err
    rc, err = _cli(capsys, _write(tmp_path / "ok.yaml", PRETRAIN), "objective.params.projector=abc")
    assert rc == 2
    assert [line.strip() for line in err.splitlines()[1:]] == [
        "objective.params.projector: expected a list, got the string 'abc' (write [abc])"]


# ---------------------------------------------------------------------------------------------
# 3. value checks name the full path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train, line", [
    ({"max_steps": -5}, "train.max_steps: must be > 0, got -5"),
    ({"max_steps": 0}, "train.max_steps: must be > 0, got 0"),
    ({"batch_size": 0}, "train.batch_size: must be > 0, got 0"),
    ({"optimizer": {"lr": -0.1}}, "train.optimizer.lr: must be > 0, got -0.1"),
    ({"optimizer": {"lr": float("nan")}}, "train.optimizer.lr: must be > 0, got nan"),
    ({"optimizer": {"weight_decay": -1e-4}}, "train.optimizer.weight_decay: must be >= 0, got -0.0001"),
    ({"optimizer": {"betas": [0.9, 1.0]}}, "train.optimizer.betas.1: must be in [0, 1), got 1.0"),
    ({"optimizer": {"betas": [-0.1, 0.9]}}, "train.optimizer.betas.0: must be in [0, 1), got -0.1"),
    ({"log_every": 0}, "train.log_every: must be >= 1, got 0"),
    ({"checkpoint_every": -1}, "train.checkpoint_every: must be >= 0, got -1"),
    ({"keep_checkpoints": 0}, "train.keep_checkpoints: must be >= 1, got 0"),
    ({"num_workers": -2}, "train.num_workers: must be >= 0, got -2"),
    ({"schedule": {"warmup_steps": -10}}, "train.schedule.warmup_steps: must be >= 0, got -10"),
    ({"grad_clip": 0}, "train.grad_clip: must be > 0, got 0.0"),
])
def test_bad_train_values_name_the_dotted_path(tmp_path, train, line):
    path = _write(tmp_path / "c.yaml", {"train": train})
    msg = _load_error(path)
    assert msg.startswith(f"{path}: invalid config:")
    assert _problems(msg) == [line]


def test_values_on_the_boundary_are_accepted(tmp_path):
    cfg, _ = load_config(_write(tmp_path / "c.yaml", {"train": {
        "max_steps": 1, "batch_size": 1, "num_workers": 0, "log_every": 1, "checkpoint_every": 0, "keep_checkpoints": 1,
        "optimizer": {"lr": 1e-9, "weight_decay": 0, "betas": [0, 0.999999]}, "schedule": {"warmup_steps": 0}}}))
    assert cfg.train.optimizer.betas == (0.0, 0.999999) and cfg.train.optimizer.weight_decay == 0.0


def test_bad_values_in_an_evaluate_entry_and_in_overrides(tmp_path):
    path = _write(tmp_path / "c.yaml", {"train": {"max_steps": 10}})
    assert _problems(_load_error(path, ("train.optimizer.lr=-1",))) == ["train.optimizer.lr: must be > 0, got -1.0"]


def test_negative_max_steps_and_lr_through_the_cli_exit_2(tmp_path, capsys, local_plugins):
    path = _write(tmp_path / "c.yaml", {"train": {"max_steps": -5}})
    rc, err = _cli(capsys, path)
    assert rc == 2
    assert err.splitlines() == [f"facerep: error: {path}: invalid config:", "  train.max_steps: must be > 0, got -5"]
    rc, err = _cli(capsys, _write(tmp_path / "ok.yaml", {}), "train.optimizer.lr=-0.1")
    assert rc == 2 and "train.optimizer.lr: must be > 0, got -0.1" in err


def test_plugin_params_use_the_public_validators(proj_plugins):
    def error(params: dict) -> list[str]:
        with pytest.raises(ConfigError) as err:
            resolve("objective", ComponentConfig("p.proj", params), "objective", proj_plugins)
        return _problems(str(err.value))

    assert error({"temperature": 0}) == ["objective.params.temperature: must be > 0, got 0.0"]
    assert error({"momentum": 1}) == ["objective.params.momentum: must be in [0, 1), got 1.0"]
    assert error({"projector": [64, 0]}) == ["objective.params.projector.1: must be >= 1, got 0"]
    assert error({"queue": -1}) == ["objective.params.queue: must be >= 0, got -1"]
    ok = resolve("objective", ComponentConfig("p.proj", {"queue": None, "momentum": 0}), "objective", proj_plugins)
    assert ok.params == ProjParams(momentum=0.0)


def test_validators_in_python_code_raise_field_errors():
    with pytest.raises(FieldError, match=r"^max_steps: must be > 0, got -5$") as err:
        TrainConfig(max_steps=-5)
    assert isinstance(err.value, ValueError) and err.value.field == "max_steps"
    with pytest.raises(FieldError, match=r"^betas\.1: must be in \[0, 1\), got 2$"):
        OptimizerConfig(betas=(0.9, 2))
    with pytest.raises(FieldError, match="expected a number, got 'x'"):
        TrainConfig(grad_clip="x")  # type: ignore[arg-type]
    assert (repr(positive), repr(non_negative), repr(at_least(3)), repr(in_range(0, 1, hi_inclusive=True))) == (
        "> 0", ">= 0", ">= 3", "in [0, 1]")


def test_a_custom_field_error_gets_the_path_too():
    with pytest.raises(ConfigError) as err:
        structure({"inner": [{"n": 2}, {"n": 3}]}, Outer, path="objective.params")
    assert structure({"inner": [{"n": 4}]}, Outer) == Outer((Even(4),))
    assert _problems(str(err.value)) == ["objective.params.inner.1.n: must be even"]


# ---------------------------------------------------------------------------------------------
# 4. unknown keys: close matches
# ---------------------------------------------------------------------------------------------


def test_unknown_keys_suggest_close_matches(tmp_path, proj_plugins):
    with pytest.raises(ConfigError) as err:
        resolve("objective", ComponentConfig("p.proj", {"temprature": 0.2}), "objective", proj_plugins)
    line = _problems(str(err.value))
    assert line == ["objective.params.temprature: unknown key(s) temprature (allowed: temperature, projector, momentum, queue, crop); "
                    "did you mean temperature?"]
    path = _write(tmp_path / "c.yaml", {"train": {"max_stpes": 3, "optimizer": {"lrr": 1, "momentun": 0.9}}})
    msg = _load_error(path)
    assert "train.max_stpes: unknown key(s) max_stpes (allowed: max_steps," in msg and "did you mean max_steps?" in msg
    assert "; did you mean lr (for lrr), momentum (for momentun)?" in msg
    path = _write(tmp_path / "c.yaml", {"zzz": 1})
    assert "did you mean" not in _load_error(path)


def test_unknown_key_through_the_cli_exits_2(tmp_path, capsys, local_plugins):
    rc, err = _cli(capsys, _write(tmp_path / "c.yaml", {"trian": {"max_steps": 3}}))
    assert rc == 2 and "trian: unknown key(s) trian (allowed: name," in err and "did you mean train?" in err


# ---------------------------------------------------------------------------------------------
# 5. YAML pitfalls
# ---------------------------------------------------------------------------------------------


def test_duplicate_keys_name_the_file_line_and_key(tmp_path):
    path = _write(tmp_path / "dup.yaml", "name: a\ntrain:\n  max_steps: 3\nseed: 1\ntrain:\n  batch_size: 8\n")
    assert _load_error(path) == (f"{path}: line 5: duplicate key 'train' (first given at line 2); "
                                 "YAML would silently drop the first one: merge the two")
    nested = _write(tmp_path / "nested.yaml", "train:\n  optimizer: {lr: 0.1, lr: 0.2}\n")
    assert _load_error(nested).startswith(f"{nested}: line 2: duplicate key 'lr' (first given at line 2)")
    # merge keys may be overridden, as YAML intends
    anchors = _write(tmp_path / "anchors.yaml", "defaults: &d {max_steps: 3, batch_size: 4}\ntrain:\n  <<: *d\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"defaults: unknown key"):
        load_config(anchors)  # parsed fine; `defaults` is then not a RunConfig field
    from facerep.config import read_yaml

    assert read_yaml(anchors)["train"] == {"max_steps": 3, "batch_size": 8}


def test_yaml_stays_data_only(tmp_path):
    path = _write(tmp_path / "evil.yaml", "name: !!python/object/apply:os.system ['echo pwned']\n")
    assert "not valid YAML" in _load_error(path)


def test_non_utf8_config_names_the_file(tmp_path):
    path = _write(tmp_path / "latin1.yaml", "name: caf\xe9\n".encode("latin-1"))
    msg = _load_error(path)
    assert msg.startswith(f"{path}: not UTF-8 text (byte 0xe9 at offset 9)")
    bom = _write(tmp_path / "bom.yaml", "\ufeffname: café\n".encode())
    assert load_config(bom)[0].name == "café"


def test_circular_base_shows_the_chain(tmp_path):
    a = _write(tmp_path / "a.yaml", {"base": "b.yaml", "name": "a"})
    b = _write(tmp_path / "b.yaml", {"base": "a.yaml", "seed": 1})
    msg = _load_error(a)
    assert "circular 'base' inheritance" in msg
    assert msg.endswith(f"{a.resolve()} -> {b.resolve()} -> {a.resolve()}")
    me = _write(tmp_path / "self.yaml", {"base": "self.yaml"})
    assert _load_error(me).endswith(f"circular 'base' inheritance: {me.resolve()} -> {me.resolve()}")
    bad = _write(tmp_path / "bad.yaml", {"base": ["a.yaml"]})
    assert _load_error(bad) == f"{bad}: base: expected a config file path or a preset name, got ['a.yaml']"


def test_yaml_problems_through_the_cli_exit_2(tmp_path, capsys, local_plugins):
    for path in (_write(tmp_path / "dup.yaml", "train: {}\ntrain: {}\n"),
                 _write(tmp_path / "enc.yaml", b"name: \xff\xfe\n"),
                 _write(tmp_path / "loop.yaml", {"base": "loop.yaml"})):
        rc, err = _cli(capsys, path)
        assert rc == 2 and err.startswith(f"facerep: error: {path}: ") and len(err.splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------
# 6. unknown timm models
# ---------------------------------------------------------------------------------------------


def test_unknown_timm_model_is_a_config_error_with_close_matches(local_plugins):
    with pytest.raises(ConfigError) as err:
        resolve("backbone", ComponentConfig("core.timm", {"model": "resnet1088"}), "backbone", local_plugins)
    (line,) = _problems(str(err.value))
    assert line.startswith("backbone.params.model: unknown timm model 'resnet1088'; did you mean ")
    assert "resnet18" in line and "resnet101" in line
    ok = resolve("backbone", ComponentConfig("core.timm", {"model": "resnet18.a1_in1k"}), "backbone", local_plugins)
    assert ok.params.model == "resnet18.a1_in1k"  # pretrained tags are fine


def test_unknown_timm_model_at_build_time_names_the_field():
    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams

    with attrs.validators.disabled():
        params = TimmBackboneParams(model="resnet1088")
    with pytest.raises(ConfigError, match=r"^backbone\.params\.model: unknown timm model 'resnet1088'; did you mean resnet18"):
        TimmBackbone(params)


def test_unknown_timm_model_through_the_cli_exits_2(tmp_path, capsys, local_plugins):
    path = _write(tmp_path / "c.yaml", {"backbone": {"name": "core.timm", "params": {"model": "resnet1088"}}})
    rc, err = _cli(capsys, path)
    assert rc == 2 and "backbone.params.model: unknown timm model 'resnet1088'; did you mean resnet18" in err


# ---------------------------------------------------------------------------------------------
# 7. describing params
# ---------------------------------------------------------------------------------------------


def test_describe_train_config_reads_docs_defaults_and_checks():
    rows = {d.name: d for d in describe_params(TrainConfig)}
    lr = rows["optimizer.lr"]
    doc = "Peak learning rate (after warm-up; before ``lr_reference_batch`` scaling)."
    assert lr == FieldDoc("optimizer.lr", "float", "0.001", doc, "> 0")
    assert rows["max_steps"].doc == "optimizer steps to train for (the schedules count these)."  # Attributes: section
    assert rows["max_steps"].check == "> 0" and rows["accumulate_steps"].check == ">= 1"
    assert rows["optimizer"].default == "OptimizerConfig()" and rows["optimizer"].type == "OptimizerConfig"
    assert rows["optimizer.no_decay"].doc.startswith("Parameter groups whose names contain")  # a #: comment
    assert rows["optimizer.betas"].check == "each in [0, 1)" and rows["optimizer.betas"].default == "[0.9, 0.999]"
    assert rows["schedule.final_weight_decay"].type == "float | None" and rows["schedule.final_weight_decay"].default == "null"
    assert list(rows)[:4] == ["max_steps", "batch_size", "accumulate_steps", "num_workers"]
    table = format_params(TrainConfig)
    assert table.splitlines()[0].split() == ["name", "type", "default", "check", "description"]
    assert any(line.startswith("optimizer.lr ") and "0.001" in line and "Peak learning rate" in line for line in table.splitlines())


def test_describe_reads_comments_and_the_attributes_section():
    docs = field_docs(ProjParams)
    assert docs == {
        "temperature": "softmax temperature.",
        "projector": "hidden and output widths of the projection MLP.",
        "momentum": "EMA momentum of the target network, in [0, 1).",  # a two-line #: block
        "queue": "negatives kept (None: no queue)",  # a trailing #: comment
        "crop": "pixels",  # a plain trailing comment, as the last resort
    }
    rows = describe_params(ProjParams)
    assert [(d.name, d.type, d.default, d.check) for d in rows] == [
        ("temperature", "float", "0.1", "> 0"),
        ("projector", "tuple[int, ...]", "[64, 32]", "each >= 1"),
        ("momentum", "float", "0.99", "in [0, 1)"),
        ("queue", "int | None", "null", ">= 0"),
        ("crop", "int", "24", ""),
    ]


def test_describe_nested_and_required_fields_and_shared_entries():
    from facerep.config import EvalConfig
    from facerep.data.folder import ImageFolderParams

    rows = {d.name: d for d in describe_params(ImageFolderParams)}
    assert rows["roots"].required and rows["roots[].path"].required and rows["roots[].start"].default == "0"
    assert rows["roots"].doc.startswith("folders (strings or")
    assert rows["on_error"].doc.endswith("the next good image is returned instead).")  # continuation line joined
    ev = {d.name: d for d in describe_params(EvalConfig)}
    assert ev["protocol"].doc == ev["protocols"].doc == "one or several registered protocols."
    with pytest.raises(TypeError):
        describe_params(dict)


def test_format_resolved_shows_the_values():
    cfg = structure({"max_steps": 7, "optimizer": {"lr": 0.5, "betas": [0.8, 0.9]}}, TrainConfig)
    text = format_resolved(cfg)
    lines = dict(line.split(None, 1) for line in text.splitlines())
    assert lines["max_steps"] == "7" and lines["optimizer.lr"] == "0.5" and lines["optimizer.betas"] == "[0.8, 0.9]"
    assert lines["grad_clip"] == "null" and lines["channels_last"] == "true" and lines["precision"] == "fp32"
    from facerep.data.folder import ImageFolderParams

    folder = format_resolved(structure({"roots": ["/a", {"path": "/b", "start": 2}]}, ImageFolderParams))
    assert "roots.1.start  2" in folder and "roots.0.path   /a" in folder
    assert format_resolved(None) == "(no parameters)"
