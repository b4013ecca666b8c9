"""Run configs: YAML files structured into frozen attrs classes with cattrs.

Unknown keys are rejected and every error names the dotted path of the bad field
(``objective.params.temperature``). Component blocks are ``{name: ..., params: {...}}``; their
``params`` are structured into the params class the component registered, so a plugin's
parameters are validated exactly like core's.

Configs are data: YAML is read with ``yaml.safe_load`` and nothing in a config is executed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from facerep.errors import ConfigError

__all__ = [
    "ComponentConfig",
    "EvalConfig",
    "LRSchedule",
    "OptimizerConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "structure",
    "unstructure",
]


@attrs.frozen
class ComponentConfig:
    """A registered component by name plus its parameters (structured later, per component)."""

    name: str
    params: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_scalar(cls, value: object) -> ComponentConfig:
        """``backbone: core.timm`` is short for ``backbone: {name: core.timm}``."""
        if not isinstance(value, str):
            raise TypeError(f"expected a component name or {{name, params}}, got {value!r}")
        return cls(value)


@attrs.frozen
class OptimizerConfig:
    """``type``: ``sgd``, ``adamw`` or ``lars`` (LARS as in SwAV / Bulat et al.: trust 0.001, no clip)."""

    type: Literal["sgd", "adamw", "lars"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    trust_coefficient: float = 0.001
    #: Parameter groups whose names contain one of these get no weight decay.
    no_decay: tuple[str, ...] = ("bias", "norm", "bn", "pos_embed", "cls_token")
    #: Scale lr linearly with the global batch over this reference batch (None: no scaling).
    lr_reference_batch: int | None = None


@attrs.frozen
class LRSchedule:
    """Linear warm-up then cosine decay, per iteration (mmengine schedulers)."""

    warmup_steps: int = 0
    warmup_start_factor: float = 0.001
    final_factor: float = 0.0
    #: Weight decay follows a cosine from ``optimizer.weight_decay`` to this value (None: constant).
    final_weight_decay: float | None = None


@attrs.frozen
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 32  # per process
    num_workers: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    launcher: Literal["none", "pytorch"] = "none"
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: LRSchedule = LRSchedule()
    grad_clip: float | None = None
    channels_last: bool = True
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    deterministic: bool = False


@attrs.frozen
class EvalConfig:
    """One evaluation entry: a task (or a bare label to classify) x protocols x few-shot fractions
    x seeds, trained on (a subset of) ``train`` and scored on ``test``.

    Attributes:
        task: a registered task (``landmarks.alignment``); None classifies ``label`` from the image.
        label: the label field to classify when no task is given (``expression``, ``attributes``).
        protocol / protocols: one or several registered protocols.
        val: an optional validation split (best-epoch selection; never the test split).
        fractions: few-shot fractions of ``train`` (seeded, nested; stratified when the task says how).
        shots: images per identity (recognition's K-shot; with ``fractions`` = identity fractions).
        seeds: one subset and one head initialisation per seed.
        backbone_layers: intermediate layers the heads read (e.g. [3, 5, 7, 11] for a ViT-B);
            None keeps the backbone's configured layers.
    """

    train: ComponentConfig
    test: ComponentConfig
    task: ComponentConfig | None = None
    label: str | None = None
    protocol: ComponentConfig | None = None
    protocols: tuple[ComponentConfig, ...] = ()
    val: ComponentConfig | None = None
    fractions: tuple[float, ...] = (1.0,)
    shots: int | None = None
    seeds: tuple[int, ...] = (0,)
    backbone_layers: tuple[int, ...] | None = None
    name: str = ""

    def all_protocols(self) -> tuple[ComponentConfig, ...]:
        return ((self.protocol,) if self.protocol is not None else ()) + self.protocols


@attrs.frozen
class RunConfig:
    name: str = "run"
    seed: int = 0
    work_dir: str | None = None
    data: ComponentConfig | None = None
    backbone: ComponentConfig | None = None
    objective: ComponentConfig | None = None
    #: Evaluate these exported weights (a ``backbone.safetensors`` with its JSON sidecar) instead of
    #: pretraining; the ``backbone`` block is then taken from the sidecar.
    backbone_weights: str | None = None
    train: TrainConfig = TrainConfig()
    evaluate: tuple[EvalConfig, ...] = ()
    #: Also evaluate the same backbone with random (seeded) weights, side by side.
    compare_random_init: bool = False
    #: Distributions that must be installed, e.g. ``["facerep-frl"]``.
    required_plugins: tuple[str, ...] = ()


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    # YAML gives ints where floats are meant (lr: 1), and 1e-3 without a dot is a string in YAML 1.1.
    conv.register_structure_hook(float, lambda v, _: _to_float(v))

    # attrs classes with a `from_scalar` classmethod also accept a bare value (e.g. a path string).
    def scalar_friendly(cls: type) -> Any:
        from cattrs.gen import make_dict_structure_fn

        base = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)
        return lambda v, t: base(v, t) if isinstance(v, Mapping) else cls.from_scalar(v)

    conv.register_structure_hook_factory(lambda t: attrs.has(t) and hasattr(t, "from_scalar"), scalar_friendly)
    return conv


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


_CONVERTER = _converter()


def _paths(exc: BaseException, path: str) -> list[str]:
    """Flatten a cattrs error tree into 'path: message' lines."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        lines: list[str] = []
        for sub in exc.exceptions:
            child = path
            for n in getattr(sub, "__notes__", []):
                if hasattr(n, "name"):
                    child = f"{path}.{n.name}" if path else n.name
                    break
                if isinstance(getattr(n, "index", None), int):  # not str.index: cattrs also adds plain-str notes
                    child = f"{path}.{n.index}"
                    break
            lines += _paths(sub, child)
        return lines
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(sorted(exc.extra_fields))
        allowed = ", ".join(a.name for a in attrs.fields(exc.cl)) if attrs.has(exc.cl) else ""
        where = f"{path}.{sorted(exc.extra_fields)[0]}" if path else sorted(exc.extra_fields)[0]
        return [f"{where}: unknown key(s) {keys} (allowed: {allowed})"]
    if isinstance(exc, KeyError):
        # cattrs' note has already put the missing field's name at the end of ``path``
        field = str(exc.args[0]) if exc.args else "?"
        where = path if path.rsplit(".", 1)[-1] == field else (f"{path}.{field}" if path else field)
        return [f"{where}: required field is missing"]
    return [f"{path or '<root>'}: {type(exc).__name__}: {exc}"]


def structure(data: Any, cls: type, *, path: str = "", source: str | Path | None = None) -> Any:
    """Structure plain data into ``cls``; raise :class:`ConfigError` naming the bad field paths."""
    if data is None:
        data = {}
    if attrs.has(cls) and not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source)}{path or '<root>'}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    try:
        return _CONVERTER.structure(data, cls)
    except Exception as exc:
        lines = _paths(exc, path)
        raise ConfigError(f"{_where(source)}invalid config:\n  " + "\n  ".join(lines)) from None


def _where(source: str | Path | None) -> str:
    return f"{source}: " if source else ""


def unstructure(obj: Any) -> Any:
    return _CONVERTER.unstructure(obj)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {item!r}: {where} is not a valid list index")
                node = node[int(part)]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:  # the node reached so far (parts[:i]) holds a plain value
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i])} is not a mapping")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {item!r}: {key} is not a valid list index")
            node[int(last)] = _parse_value(raw)
        elif isinstance(node, dict):
            node[last] = _parse_value(raw)
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is not a mapping")
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:  # inheritance: keys here override the base file's (a path or a preset)
        local = Path(base) if Path(base).is_absolute() else path.parent / base
        merged = read_yaml(local if local.is_file() or Path(base).suffix else find_config(base))
        data = _deep_merge(merged, data)
    return data


def find_config(ref: str | Path) -> Path:
    """A config file path, or a plugin preset ``<plugin>/<name>`` (see ``facerep_config_paths``)."""
    path = Path(ref)
    if path.is_file():
        return path
    from facerep.plugins import get_plugins

    hook = get_plugins().manager.hook.facerep_config_paths
    presets: dict[str, Path] = {}
    for impl in hook.get_hookimpls():
        for folder in impl.function() or []:
            for file in sorted(Path(folder).glob("*.yaml")):
                presets.setdefault(f"{impl.plugin_name}/{file.stem}", file)
    if str(ref) in presets:
        return presets[str(ref)]
    raise ConfigError(f"config not found: {ref} (not a file, not a preset; presets: {', '.join(presets) or 'none'})")


def _deep_merge(base: dict[str, Any], top: dict[str, Any], *, root: bool = True) -> dict[str, Any]:
    """Mappings merge key by key; a component block naming another component replaces the base's
    block whole (its params belong to the other component)."""
    if not root and "name" in top and "name" in base and top["name"] != base["name"]:
        return dict(top)
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value, root=False) if both else value
    return out


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> tuple[RunConfig, dict[str, Any]]:
    """Read a YAML config, apply overrides and structure it. Returns the config and the raw data."""
    raw = apply_overrides(read_yaml(path), overrides)
    return structure(raw, RunConfig, source=path), raw
