"""Run configs: YAML files structured into frozen attrs classes with cattrs.

Unknown keys are rejected and every error names the dotted path of the bad field
(``objective.params.temperature``). Component blocks are ``{name: ..., params: {...}}``; their
``params`` are structured into the params class the component registered, so a plugin's
parameters are validated exactly like core's.

Configs are data: YAML is read with a ``yaml.SafeLoader`` (that also rejects a key given twice in
one mapping) and nothing in a config is executed. ``base: other.yaml`` inherits another file
(circular chains are an error).

Structuring is strict where YAML is loose: an ``int`` field rejects ``4.7`` and ``true`` (``4.0`` is
4), a list or tuple field rejects a bare string (``roots: faces`` is not ``[f, a, c, e, s]``), and an
unknown key is reported with its close matches.

Value checks
------------
Fields check their values with the validators below, and a failed check is reported with the full
dotted path (``train.max_steps: must be > 0, got -5``). Plugin params classes use the same ones::

    from facerep.config import at_least, each, in_range, non_negative, positive

    @attrs.frozen
    class MyParams:
        temperature: float = attrs.field(default=0.1, validator=positive)
        queue: int = attrs.field(default=0, validator=non_negative)
        momentum: float = attrs.field(default=0.99, validator=in_range(0, 1))  # [0, 1)
        layers: tuple[int, ...] = attrs.field(default=(), validator=each(non_negative))

``positive`` (> 0), ``non_negative`` (>= 0), ``at_least(n)`` (>= n) and ``in_range(lo, hi,
lo_inclusive=True, hi_inclusive=False)`` let ``None`` through (for optional fields); ``each(v)``
applies ``v`` to every element of a sequence (the error names the index). A custom check raises
:class:`FieldError` (``raise FieldError("must be even", field=attribute.name)``) to get the same
path-named message.
"""

from __future__ import annotations

import collections.abc
import copy
import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_origin

import attrs
import cattrs
import yaml
from cattrs.cols import list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from facerep.errors import ConfigError

__all__ = [
    "ComponentConfig",
    "EvalConfig",
    "FieldError",
    "LRSchedule",
    "OptimizerConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "at_least",
    "each",
    "in_range",
    "load_config",
    "non_negative",
    "positive",
    "structure",
    "unstructure",
]


# ---------------------------------------------------------------------------------------------
# value checks (attrs validators whose errors name the field)
# ---------------------------------------------------------------------------------------------


class FieldError(ValueError):
    """A bad value, printed as ``<path>: <message>`` (no exception type) by :func:`structure`.

    ``field`` is the name of the field (or a dotted tail such as ``betas.1``) below the path at which
    the error surfaced: validators run inside the class's ``__init__``, where cattrs attaches no
    field note, so the error carries the name itself.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


@attrs.frozen(repr=False)
class _Bound:
    """``value (>|>=) lo`` and/or ``value (<|<=) hi``; None passes."""

    lo: float | None = None
    hi: float | None = None
    lo_inclusive: bool = True
    hi_inclusive: bool = False

    @property
    def text(self) -> str:
        if self.hi is None:
            return f"{'>=' if self.lo_inclusive else '>'} {_num(self.lo)}"
        if self.lo is None:
            return f"{'<=' if self.hi_inclusive else '<'} {_num(self.hi)}"
        return f"in {'[' if self.lo_inclusive else '('}{_num(self.lo)}, {_num(self.hi)}{']' if self.hi_inclusive else ')'}"

    def check(self, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(f"expected a number, got {value!r}")
        ok = not math.isnan(value)
        if ok and self.lo is not None:
            ok = value >= self.lo if self.lo_inclusive else value > self.lo
        if ok and self.hi is not None:
            ok = value <= self.hi if self.hi_inclusive else value < self.hi
        if not ok:
            raise FieldError(f"must be {self.text}, got {value!r}")

    def __call__(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        try:
            self.check(value)
        except FieldError as exc:
            raise FieldError(exc.message, field=attribute.name) from None

    def __repr__(self) -> str:
        return self.text


def _num(x: float | None) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


#: attrs validator: the value is > 0 (None passes).
positive = _Bound(0, lo_inclusive=False)
#: attrs validator: the value is >= 0 (None passes).
non_negative = _Bound(0)


def at_least(lo: float) -> _Bound:
    """attrs validator: the value is >= ``lo`` (None passes)."""
    return _Bound(lo)


def in_range(lo: float, hi: float, *, lo_inclusive: bool = True, hi_inclusive: bool = False) -> _Bound:
    """attrs validator: ``lo <= value < hi`` by default (None passes)."""
    return _Bound(lo, hi, lo_inclusive, hi_inclusive)


@attrs.frozen(repr=False)
class _Each:
    inner: Callable[[Any, attrs.Attribute, Any], None]

    @property
    def text(self) -> str:
        return f"each {getattr(self.inner, 'text', repr(self.inner))}"

    def __call__(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        for i, item in enumerate(value):
            try:
                self.inner(instance, attribute, item)
            except FieldError as exc:
                raise FieldError(exc.message, field=f"{attribute.name}.{i}") from None

    def __repr__(self) -> str:
        return self.text


def each(validator: Callable[[Any, attrs.Attribute, Any], None]) -> _Each:
    """attrs validator: apply ``validator`` to every element (the error names ``field.<index>``)."""
    return _Each(validator)


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
    #: Peak learning rate (after warm-up; before ``lr_reference_batch`` scaling).
    lr: float = attrs.field(default=1e-3, validator=positive)
    #: Decoupled weight decay (AdamW) or L2 penalty (SGD, LARS).
    weight_decay: float = attrs.field(default=0.05, validator=non_negative)
    #: SGD / LARS momentum.
    momentum: float = attrs.field(default=0.9, validator=non_negative)
    #: AdamW's (beta1, beta2), each in [0, 1).
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.999), validator=each(in_range(0, 1)))
    #: AdamW's epsilon (torch's 1e-8; open_clip and so FaRL's recipe use 1e-6 for ViTs).
    eps: float = attrs.field(default=1e-8, validator=positive)
    #: LARS trust coefficient.
    trust_coefficient: float = attrs.field(default=0.001, validator=positive)
    #: Parameter groups whose names contain one of these get no weight decay.
    no_decay: tuple[str, ...] = ("bias", "norm", "bn", "pos_embed", "cls_token")
    #: Scale lr linearly with the global batch over this reference batch (None: no scaling).
    lr_reference_batch: int | None = attrs.field(default=None, validator=positive)


@attrs.frozen
class LRSchedule:
    """Linear warm-up then cosine decay, per iteration (mmengine schedulers)."""

    #: Iterations of linear warm-up (0: none).
    warmup_steps: int = attrs.field(default=0, validator=non_negative)
    #: The warm-up starts at this fraction of ``lr`` (0: from zero, as DINO's and MAE's code).
    warmup_start_factor: float = attrs.field(default=0.001, validator=in_range(0, 1, hi_inclusive=True))
    #: Where the linear warm-up reaches ``lr``: ``last_warmup_step`` (step ``warmup_steps - 1``: DINO's
    #: ``np.linspace``, mmengine's LinearLR) or ``after_warmup`` (step ``warmup_steps``, the first
    #: cosine step: MAE's / MCF's ``lr_sched.adjust_learning_rate``, ``lr * step / warmup_steps``).
    warmup_peak: Literal["last_warmup_step", "after_warmup"] = "last_warmup_step"
    #: The cosine decays to this fraction of ``lr``.
    final_factor: float = attrs.field(default=0.0, validator=non_negative)
    #: Weight decay follows a cosine from ``optimizer.weight_decay`` to this value (None: constant).
    final_weight_decay: float | None = attrs.field(default=None, validator=non_negative)


@attrs.frozen
class TrainConfig:
    """Pretraining: steps, batch, precision, optimizer and schedule, logging and checkpoints.

    Attributes:
        max_steps: optimizer steps to train for (the schedules count these).
        batch_size: samples per process and forward pass (a micro-batch when ``accumulate_steps``
            > 1); the global batch of one optimizer step is ``batch_size * accumulate_steps *
            world size``, and ``optimizer.lr_reference_batch`` scales by that.
        accumulate_steps: micro-batches per optimizer step (gradient accumulation). Each
            micro-batch is its own forward and backward (BatchNorm and in-batch negatives see
            ``batch_size`` per process), the loss is divided by ``accumulate_steps`` so that the
            gradient is the mean over the step's samples, DDP all-reduces once per step, and
            objectives with ``after_micro_batch`` (API 1.4) update per-forward state (queues,
            momentum encoders) after each micro-batch as their official code does.
        num_workers: data-loading worker processes (0: load in the main process).
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 with a dynamic loss scaler,
            torch's GradScaler, as the official runs' apex O1 / ``torch.cuda.amp``). fp16 also runs
            on CPU (slowly: it is there to test the scaled path); bf16 is the CPU choice.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        launcher: ``none`` (one process) or ``pytorch`` (torchrun).
        optimizer: the optimizer and its learning rate.
        schedule: warm-up and cosine decay of the learning rate (and optionally the weight decay).
        grad_clip: clip gradients to this norm (None: no clipping).
        grad_clip_mode: ``global``: the norm of all gradients together (torch's
            ``clip_grad_norm_``); ``per_tensor``: each parameter tensor's gradient to that norm on
            its own (DINO's and LAFS's ``clip_gradients``, ``dino/utils.py:132-142``).
        channels_last: use the channels-last memory format (faster convolutions on GPU).
        compile: ``torch.compile`` (inductor, CPU and CUDA) the backbone's forward and its
            momentum / teacher copies (the objective's submodules of the backbone's class), in
            place: checkpoints and the exported backbone keep their keys. Static shapes, one
            compile per view size in the first steps (tens of seconds on CPU). Where torch cannot
            compile (no C++ compiler on CPU, no Triton on CUDA) the run warns once and trains eager.
        sync_bn: BatchNorm statistics over the global batch of a multi-process run (FRL pretrains
            with SyncBN; torch's SyncBatchNorm on CUDA, ``facerep.engine.sync_bn`` on CPU / gloo);
            no effect in one process.
        log_every: log the loss every this many steps.
        checkpoint_every: save a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: how many of the latest checkpoints to keep.
        deterministic: ask cuDNN / torch for deterministic kernels (slower).
        log_backends: extra mmengine visualisation backends for the logged scalars: ``tensorboard``
            (``<work_dir>/tensorboard``), ``wandb``; empty: none (mmengine's local JSON is always written).
    """

    max_steps: int = attrs.field(default=100, validator=positive)
    batch_size: int = attrs.field(default=32, validator=positive)  # per process and forward
    accumulate_steps: int = attrs.field(default=1, validator=at_least(1))
    num_workers: int = attrs.field(default=0, validator=non_negative)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    launcher: Literal["none", "pytorch"] = "none"
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: LRSchedule = LRSchedule()
    grad_clip: float | None = attrs.field(default=None, validator=positive)
    grad_clip_mode: Literal["global", "per_tensor"] = "global"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    log_every: int = attrs.field(default=10, validator=at_least(1))
    checkpoint_every: int = attrs.field(default=0, validator=non_negative)  # 0: only at the end
    keep_checkpoints: int = attrs.field(default=2, validator=at_least(1))
    deterministic: bool = False
    log_backends: tuple[Literal["tensorboard", "wandb"], ...] = ()


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
        save_models: write every trained backbone + head under ``models/`` in the work dir
            (``facerep.eval.saved``; the task must implement ``head_spec``).
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
    save_models: bool = False
    name: str = ""

    def all_protocols(self) -> tuple[ComponentConfig, ...]:
        return ((self.protocol,) if self.protocol is not None else ()) + self.protocols


@attrs.frozen
class RunConfig:
    """A run: pretraining (``data`` + ``backbone`` + ``objective`` + ``train``) and/or evaluation.

    Attributes:
        name: the run's name (default work dir ``work_dirs/<name>``).
        seed: seeds model initialisation, the sample stream and the few-shot subsets.
        work_dir: output folder (``--work-dir`` overrides it).
        data: the unlabelled training dataset (a registered dataset component).
        backbone: the encoder (``core.timm`` or a plugin's backbone).
        objective: the pretraining method (a registered objective); None: evaluate only.
    """

    name: str = "run"
    seed: int = 0
    work_dir: str | None = None
    data: ComponentConfig | None = None
    backbone: ComponentConfig | None = None
    objective: ComponentConfig | None = None
    #: Evaluate these exported weights (a ``backbone.safetensors`` with its JSON sidecar) instead of
    #: pretraining; the ``backbone`` block is then taken from the sidecar.
    backbone_weights: str | None = None
    #: The pretraining loop: steps, batch, precision, optimizer, schedule, logging, checkpoints.
    train: TrainConfig = TrainConfig()
    #: Evaluation entries (see below), run after pretraining or by ``facerep eval``.
    evaluate: tuple[EvalConfig, ...] = ()
    #: Also evaluate the same backbone with random (seeded) weights, side by side.
    compare_random_init: bool = False
    #: Distributions that must be installed, e.g. ``["facerep-frl"]``.
    required_plugins: tuple[str, ...] = ()


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    # YAML gives ints where floats are meant (lr: 1), and 1e-3 without a dot is a string in YAML 1.1.
    conv.register_structure_hook(float, lambda v, _: _to_float(v))
    # ...but never cuts a float to an int (batch_size: 4.7) nor takes a bool for one.
    conv.register_structure_hook(int, lambda v, _: _to_int(v))
    conv.register_structure_hook(bool, lambda v, _: _to_bool(v))  # (bool is an int: it needs its own hook)

    # a bare string (or a mapping) where a list is meant is an error, not a list of its characters
    def no_bare_strings(t: Any) -> Any:
        origin = get_origin(t) or t
        if origin is tuple:
            base: Any = conv._structure_tuple  # cattrs' own (heterogeneous and homogeneous tuples)
        elif origin in (set, collections.abc.MutableSet):
            base = conv._structure_set
        elif origin in (frozenset, collections.abc.Set):
            base = conv._structure_frozenset
        elif origin in (list, collections.abc.MutableSequence):
            base = list_structure_factory(t, conv)
        else:  # an abstract Sequence[X]: a tuple, as cattrs >= 25.2 does
            args = getattr(t, "__args__", None) or (Any,)
            base = lambda v, _t, _tup=tuple[args[0], ...]: conv._structure_tuple(v, _tup)  # type: ignore[valid-type]

        def hook(value: Any, type_: Any) -> Any:
            _check_sequence(value)
            return base(value, type_)

        return hook

    conv.register_structure_hook_factory(lambda t: (get_origin(t) or t) in _SEQUENCE_TYPES, no_bare_strings)

    # attrs classes with a `from_scalar` classmethod also accept a bare value (e.g. a path string).
    def scalar_friendly(cls: type) -> Any:
        from cattrs.gen import make_dict_structure_fn

        base = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)
        return lambda v, t: base(v, t) if isinstance(v, Mapping) else cls.from_scalar(v)

    conv.register_structure_hook_factory(lambda t: attrs.has(t) and hasattr(t, "from_scalar"), scalar_friendly)
    return conv


_SEQUENCE_TYPES = (tuple, list, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence,
                   collections.abc.Set, collections.abc.MutableSet)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:  # "abc"
        raise FieldError(f"expected a number, got {value!r}") from None


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise FieldError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise FieldError(f"expected an integer, got {value!r}")
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:  # "1e5" (a string in YAML 1.1) is an integer; "4.7" and "ten" are not
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"invalid literal for int() with base 10: {value!r}") from None
            if number.is_integer():
                return int(number)
            raise FieldError(f"expected an integer, got {value!r}") from None
    raise FieldError(f"expected an integer, got {_describe(value)}")


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise FieldError(f"expected true or false, got {_describe(value)}")  # bool("false") would be True


def _check_sequence(value: Any) -> None:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")] if "," in value else [value]
        raise FieldError(f"expected a list, got the string {value!r} (write [{', '.join(map(_hint_item, parts))}])")
    if isinstance(value, Mapping):
        raise FieldError(f"expected a list, got a mapping {dict(value)!r}")
    if value is None:
        raise FieldError("expected a list, got null")
    if isinstance(value, bytes) or not isinstance(value, Iterable):
        raise FieldError(f"expected a list, got {_describe(value)} (write [{_flow(value)}])")


def _hint_item(text: str) -> str:
    """A list item as the user would write it: bare when YAML reads it as a string or a number."""
    try:
        parsed = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError:
        parsed = None
    ok = isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], str | int | float) and not isinstance(parsed[0], bool)
    return text if ok and text else _flow(text)


def _flow(value: Any) -> str:
    """``value`` as YAML flow text (quoted where a bare word would read as something else)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _describe(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


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
        extra = sorted(exc.extra_fields)
        names = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        where = f"{path}.{extra[0]}" if path else extra[0]
        hints = {k: difflib.get_close_matches(k, names, n=3, cutoff=0.6) for k in extra}
        hint = ""
        if any(hints.values()):
            if len(extra) == 1:
                hint = f"; did you mean {' or '.join(hints[extra[0]])}?"
            else:
                hint = "; did you mean " + ", ".join(f"{' or '.join(m)} (for {k})" for k, m in hints.items() if m) + "?"
        return [f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(names)}){hint}"]
    if isinstance(exc, FieldError):
        where = f"{path}.{exc.field}" if path and exc.field else (exc.field or path or "<root>")
        return [f"{where}: {exc.message}"]
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


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(problem=f"duplicate key {key!r}")
        self.key, self.line, self.first_line = key, line, first_line


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (plain data only) that refuses a key given twice in one mapping:
    plain YAML keeps the last one, silently dropping the first block."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKeyError(key, line, seen[key])
                    seen[key] = line
                except TypeError:  # unhashable: the base class reports it
                    continue
        return super().construct_mapping(node, deep=deep)



def _load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # safe: _ConfigLoader is a SafeLoader subclass


def read_yaml(path: str | Path, *, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    here = path.resolve()
    if here in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(here):], here))
        raise ConfigError(f"{path}: circular 'base' inheritance: {cycle}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the file as UTF-8") from None
    try:
        data = _load_yaml_text(text)
    except _DuplicateKeyError as exc:
        raise ConfigError(f"{path}: line {exc.line}: duplicate key {exc.key!r} (first given at line {exc.first_line}); "
                          "YAML would silently drop the first one: merge the two") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:  # inheritance: keys here override the base file's (a path or a preset)
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: base: expected a config file path or a preset name, got {base!r}")
        local = Path(base) if Path(base).is_absolute() else path.parent / base
        merged = read_yaml(local if local.is_file() or Path(base).suffix else find_config(base), _chain=(*_chain, here))
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
