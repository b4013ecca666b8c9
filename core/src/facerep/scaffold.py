"""Generate a new plugin package: the code behind ``facerep plugins new objective NAME``.

:func:`new_plugin` writes a complete, installable third-party plugin in the shape of
``integration_tests/plugins/facerep-example-objective``::

    facerep-NAME/
        pyproject.toml                    entry point ``NAME = "facerep_NAME.plugin"``
        README.md
        src/facerep_NAME/__init__.py
        src/facerep_NAME/plugin.py        hook implementations only (imports no torch)
        src/facerep_NAME/objective.py     a working two-view NT-Xent (SimCLR) objective to edit
        src/facerep_NAME/configs/NAME_synthetic.yaml   a ~20-step CPU preset on synthetic faces
        tests/test_objective.py           the facerep.testing contract suite + a hand-checked loss

so that ``pip install -e ./facerep-NAME``, ``pytest facerep-NAME/tests`` and
``facerep run NAME/NAME_synthetic`` work straight away, offline. It never overwrites anything: a
destination folder that exists and is not empty is refused.

The templates are plain strings in this module (``string.Template``, ``${...}`` placeholders), so
the generator has no data files to ship.
"""

from __future__ import annotations

import importlib.metadata as md
import keyword
import re
import warnings
from pathlib import Path
from string import Template

from facerep.errors import ConfigError

__all__ = ["KINDS", "new_plugin", "plugin_files"]

#: Component kinds :func:`new_plugin` can generate.
KINDS = ("objective",)

#: A plugin name: the entry-point name, the namespace of its components and part of the package name.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: Namespaces a new plugin may not take (core's built-ins live in ``core``).
_RESERVED = frozenset({"core", "facerep"})


def _core_requirement() -> str:
    """``>=X.Y,<X.(Y+1)``: the minor series of the installed core (its API may change between them)."""
    from facerep import __version__

    match = re.match(r"(\d+)\.(\d+)", __version__)
    if not match:  # pragma: no cover - core's own version is always X.Y.Z
        raise ConfigError(f"cannot read facerep's version {__version__!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    return f">={major}.{minor},<{major}.{minor + 1}"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 40:
        raise ConfigError(
            f"plugin name {name!r} is not valid: use lowercase letters, digits and underscores, starting with a letter"
            " (at most 40 characters), e.g. 'barlow'"
        )
    if name.endswith("_") or "__" in name:
        raise ConfigError(f"plugin name {name!r} is not valid: no leading, trailing or doubled underscores")
    if name in _RESERVED or keyword.iskeyword(name):
        raise ConfigError(f"plugin name {name!r} is reserved; choose another namespace")


def _warn_if_installed(name: str) -> None:
    try:
        installed = {ep.name: ep for ep in md.entry_points(group="facerep")}
    except Exception:  # pragma: no cover - broken metadata elsewhere must not stop the generator
        return
    if name in installed:
        ep = installed[name]
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed distribution"
        warnings.warn(
            f"a facerep plugin named {name!r} is already installed ({dist}); installing the new package beside it"
            " makes the two collide: rename one of them",
            UserWarning,
            stacklevel=3,
        )


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def plugin_files(kind: str, name: str, *, package: str | None = None) -> dict[str, str]:
    """The files :func:`new_plugin` writes, as ``{relative path: text}`` (nothing is written).

    Raises:
        ConfigError: an unsupported ``kind`` or an invalid ``name`` / ``package``.
    """
    if kind not in KINDS:
        raise ConfigError(f"cannot generate a plugin of kind {kind!r}: supported kinds are {', '.join(KINDS)}")
    _check_name(name)
    package = package or f"facerep_{name}"
    if not package.isidentifier() or keyword.iskeyword(package) or package != package.lower():
        raise ConfigError(f"package {package!r} is not a valid lowercase Python package name")
    if package == "facerep" or package.startswith("facerep."):
        raise ConfigError(f"package {package!r} would shadow facerep itself; choose another one")

    from facerep.hookspecs import API_VERSION

    values = {
        "name": name,
        "comp": name,  # the objective's short name: the component is NAME.NAME
        "Camel": _camel(name),
        "package": package,
        "dist": "facerep-" + name.replace("_", "-"),
        "core_req": _core_requirement(),
        "api_version": API_VERSION,
    }
    templates = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"src/{package}/__init__.py": _INIT,
        f"src/{package}/plugin.py": _PLUGIN,
        f"src/{package}/objective.py": _OBJECTIVE,
        f"src/{package}/configs/{name}_synthetic.yaml": _PRESET,
        "tests/test_objective.py": _TESTS,
    }
    return {path: Template(text).substitute(values) for path, text in templates.items()}


def new_plugin(kind: str, name: str, dest: str | Path, *, package: str | None = None) -> Path:
    """Write a new plugin package of ``kind`` named ``name`` into the folder ``dest``.

    Args:
        kind: the component the plugin provides; ``"objective"`` (see :data:`KINDS`).
        name: the plugin's entry-point name and namespace (``barlow``: distribution
            ``facerep-barlow``, package ``facerep_barlow``, objective ``barlow.barlow``, preset
            ``barlow/barlow_synthetic``): lowercase letters, digits and underscores.
        dest: the package folder to create (conventionally ``facerep-<name>``); it must not exist
            or be empty.
        package: the import package name; default ``facerep_<name>``.

    Returns:
        ``dest`` (resolved).

    Raises:
        ConfigError: an unsupported kind, an invalid name, or a ``dest`` that is a file or a folder
            that is not empty (nothing is written then).

    Warns:
        UserWarning: a plugin of that name is already installed (the two would collide).
    """
    files = plugin_files(kind, name, package=package)  # validates before anything touches the disk
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"cannot create the plugin in {dest}: it is a file")
    if dest.is_dir() and any(dest.iterdir()):
        raise ConfigError(
            f"cannot create the plugin in {dest}: the folder exists and is not empty (nothing was written; choose a new folder)"
        )
    _warn_if_installed(name)
    dest.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8", newline="\n") as f:  # "x": never overwrite
            f.write(text)
    return dest


# ---------------------------------------------------------------------------------------------
# templates (string.Template: ${...} is substituted, $$ is a literal dollar)
# ---------------------------------------------------------------------------------------------

_PYPROJECT = '''\
# A facerep plugin, generated by `facerep plugins new objective ${name}`.
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "${dist}"
version = "0.1.0"
description = "facerep plugin ${name}: a pretraining objective (starts as SimCLR's NT-Xent)"
readme = "README.md"
requires-python = ">=3.11"
dependencies = [
    "facerep-core${core_req}",
    "torch>=2.6",
    "numpy>=1.26",
    "attrs>=23.2",
]

[project.optional-dependencies]
test = ["pytest>=8"]

# The entry-point name ("${name}") is the plugin's namespace: its objective is `${name}.${comp}`
# and its presets are `${name}/<file stem>`.
[project.entry-points.facerep]
${name} = "${package}.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
${package} = ["configs/*.yaml"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "--import-mode=importlib"
'''

_README = '''\
# ${dist}

A facerep plugin. It registers one pretraining objective, `${name}.${comp}`,
and one preset, `${name}/${name}_synthetic`. It was generated by
`facerep plugins new objective ${name}` and starts as **SimCLR's NT-Xent** (Chen, Kornblith,
Norouzi & Hinton, *ICML 2020*): two augmented views of every face, a backbone, an MLP projector,
and a contrastive loss over the batch. Edit `objective.py` to turn it into your method.

```bash
# from the folder that holds ${dist}/
pip install -e ./${dist}
# the plugin loads and every import string resolves
facerep plugins check --expect ${name}
# lists ${name}.${comp}, provided by ${dist} 0.1.0
facerep list --kind objective
# the facerep.testing contract suite + the loss tests
pytest ${dist}/tests
# ~20 CPU steps on synthetic faces; writes runs/${name}_synthetic/backbone.safetensors
facerep run ${name}/${name}_synthetic --work-dir runs/${name}_synthetic
```

Layout:

- `pyproject.toml`: the `[project.entry-points.facerep]` entry `${name} = "${package}.plugin"`.
- `src/${package}/plugin.py`: hook implementations only; imports no torch.
- `src/${package}/objective.py`: the params class, the view transform, the loss and the objective.
- `src/${package}/configs/`: presets returned by `facerep_config_paths` (`facerep run ${name}/<stem>`).
- `tests/`: the loss checked against a hand-computed value, plus the contract suite core runs on
  every objective.

The loss, for the projected embeddings `z` of the 2N views of a batch of N faces (L2-normalised):

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )

averaged over the 2N ordered positive pairs (each view and the other view of its face). The
batch is the global one when training on several processes (`facerep.dist.all_gather_with_grad`).

Before you publish: pick a license, fill in the description, and rename the classes.
'''

_INIT = '''\
"""${dist}: a facerep plugin adding the ``${name}.${comp}`` objective.

Importing this package imports nothing heavy; the objective lives in :mod:`${package}.objective`
and is imported only when a run builds it.
"""

__version__ = "0.1.0"
'''

_PLUGIN = '''\
"""The plugin module named by the ``facerep`` entry point: hook implementations only.

It imports no torch: components are registered as import strings, so ``facerep list`` stays fast
and a problem in the objective module cannot break the discovery of other plugins.
"""

from __future__ import annotations

from pathlib import Path

from facerep.hookspecs import hookimpl

#: The facerep plugin API this plugin was written against (core refuses another major version).
API_VERSION = "${api_version}"


@hookimpl
def facerep_plugin_info() -> dict[str, str]:
    return {"api_version": API_VERSION, "summary": "${name}: a two-view contrastive objective (SimCLR NT-Xent)"}


@hookimpl
def facerep_register(registrar) -> None:
    registrar.objective(
        "${comp}",
        "${package}.objective:${Camel}Objective",
        params="${package}.objective:${Camel}Params",
        summary="two-view NT-Xent contrastive loss (SimCLR; Chen et al., ICML 2020)",
    )


@hookimpl
def facerep_config_paths() -> list[Path]:
    return [Path(__file__).parent / "configs"]
'''

_OBJECTIVE = '''\
"""The ``${name}.${comp}`` objective: SimCLR's NT-Xent on two augmented views of each face.

SimCLR: Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv:2002.05709). Every face gives two views (random resized crop,
colour distortion, grey, blur, flip); both go through the backbone and an MLP projector; the
normalised-temperature cross-entropy (NT-Xent, eq. 1 of the paper) makes each view pick the other
view of its face among the 2N - 1 other views of the batch. The pooled backbone features (before
the projector) are the representation that is exported.

This file is the starting point of your method: change the params, the views and the loss, keep
the five methods of :class:`facerep.protocols.Objective` (``view_transform``, ``forward``,
``before_optimizer_step``, ``after_optimizer_step``, ``exported_backbone``). Views are uint8
arrays drawn from the ``rng`` you are given (never global random state); the runner normalises
them on the device with ``backbone.preprocess``.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerep.data.augment import ColorAugment, random_resized_crop
from facerep.dist import all_gather_with_grad
from facerep.types import LossOutput, Sample

__all__ = ["${Camel}Objective", "${Camel}Params", "${Camel}Views", "nt_xent"]

#: Aspect-ratio range (width / height) of the random resized crop: torchvision's, as in SimCLR.
CROP_RATIO = (3 / 4, 4 / 3)


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _probability(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value!r}")


def _range(low: float, high: float, *, strict_low: bool = False):
    def check(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
        lo, hi = value
        if not ((low < lo) if strict_low else (low <= lo)) or not lo <= hi <= high:
            raise ValueError(f"{attribute.name} must satisfy {low} {'<' if strict_low else '<='} low <= high <= {high}, got {value!r}")

    return check


def _strength(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 2.5:  # hue jitter 0.2 s must stay within half a turn
        raise ValueError(f"{attribute.name} must be in [0, 2.5], got {value!r}")


@attrs.frozen
class ${Camel}Params:
    """The ``objective.params`` block of a config. Typed, defaulted and validated: a wrong value
    is reported with its config path (``objective.params.temperature: ...``)."""

    #: Hidden width of the projector MLP (Linear-BN-ReLU-Linear); SimCLR uses 2048 on a ResNet-50.
    proj_hidden_dim: int = attrs.field(default=512, validator=_positive)
    #: Output size of the projector, where the loss is computed (SimCLR: 128).
    proj_dim: int = attrs.field(default=128, validator=_positive)
    #: Softmax temperature tau of NT-Xent (SimCLR Table 5: 0.1 to 0.5; lower suits larger batches).
    temperature: float = attrs.field(default=0.2, validator=_positive)
    #: Side of the square views, in pixels.
    view_size: int = attrs.field(default=64, validator=_positive)
    #: Area range of the random resized crop, as a fraction of the image (SimCLR: 0.08-1 on
    #: ImageNet; a face crop keeps more so that the view still shows a face).
    crop_scale: tuple[float, float] = attrs.field(default=(0.3, 1.0), validator=_range(0.0, 1.0, strict_low=True))
    #: Colour-distortion strength s: jitter brightness = contrast = saturation = 0.8 s, hue = 0.2 s
    #: (SimCLR: s = 1 on ImageNet, 0.5 on CIFAR-10).
    color_strength: float = attrs.field(default=0.5, validator=_strength)
    #: Probability of the colour jitter (SimCLR: 0.8).
    jitter_p: float = attrs.field(default=0.8, validator=_probability)
    #: Probability of converting a view to grey (SimCLR: 0.2).
    grayscale_p: float = attrs.field(default=0.2, validator=_probability)
    #: Probability of a Gaussian blur (SimCLR: 0.5).
    blur_p: float = attrs.field(default=0.5, validator=_probability)
    #: Range of the blur's standard deviation, in pixels (SimCLR: 0.1-2.0 on 224 px images).
    blur_sigma: tuple[float, float] = attrs.field(default=(0.1, 2.0), validator=_range(0.0, 100.0, strict_low=True))
    #: Probability of a horizontal flip.
    flip_p: float = attrs.field(default=0.5, validator=_probability)

    @classmethod
    def tiny(cls) -> ${Camel}Params:
        """CPU-sized parameters for tests (the facerep.testing contract suite uses this)."""
        return cls(proj_hidden_dim=32, proj_dim=16, view_size=32)

    def color(self) -> ColorAugment:
        """The photometric part of a view (core's torchvision-equivalent uint8 helpers)."""
        s = self.color_strength
        return ColorAugment(
            jitter_p=self.jitter_p,
            brightness=0.8 * s,
            contrast=0.8 * s,
            saturation=0.8 * s,
            hue=0.2 * s,
            grayscale_p=self.grayscale_p,
            blur_p=self.blur_p,
            blur_sigma=self.blur_sigma,
            solarize_p=0.0,
            flip_p=self.flip_p,
        )


class ${Camel}Views:
    """Two independent views per face: random resized crop to ``view_size``, then colour jitter,
    grey, blur and flip, each with its own probability. All randomness comes from ``rng``; the
    output is two ``(view_size, view_size, 3)`` uint8 arrays."""

    def __init__(self, params: ${Camel}Params) -> None:
        self.size = params.view_size
        self.scale = params.crop_scale
        self.color = params.color()

    def __call__(self, sample: Sample, rng: np.random.Generator) -> list[np.ndarray]:
        return [self.color(random_resized_crop(sample.image, self.size, self.scale, CROP_RATIO, rng), rng) for _ in range(2)]


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent (SimCLR eq. 1) of two ``(N, D)`` batches where row ``i`` of ``z_a`` and of ``z_b``
    are the two views of face ``i``.

    The 2N embeddings are L2-normalised; each one's logits are its cosine similarities to the
    2N - 1 others divided by ``temperature``; the loss is the cross-entropy of picking its positive
    (the other view of its face), averaged over all 2N of them.
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"expected two (N, D) embeddings of the same shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    n = z_a.shape[0]
    if n < 2:
        raise ValueError("NT-Xent needs at least 2 faces per batch (the other faces are the negatives)")
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    logits = z @ z.T / temperature
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pair, float("-inf"))  # a view is not its own positive
    idx = torch.arange(n, device=z.device)
    targets = torch.cat([idx + n, idx])  # view i of z_a <-> view i of z_b
    return F.cross_entropy(logits, targets)


def _projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class ${Camel}Objective(nn.Module):
    """The :class:`facerep.protocols.Objective`, built by core as ``${Camel}Objective(params, backbone=backbone)``."""

    def __init__(self, params: ${Camel}Params | None = None, *, backbone: nn.Module) -> None:
        super().__init__()
        self.params = params = params or ${Camel}Params()
        self.backbone = backbone
        self.projector = _projector(int(backbone.embed_dim), params.proj_hidden_dim, params.proj_dim)

    def view_transform(self) -> ${Camel}Views:
        return ${Camel}Views(self.params)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x).pooled)

    def forward(self, views: list[torch.Tensor]) -> LossOutput:
        if len(views) != 2:
            raise ValueError(f"${Camel}Objective trains on 2 views, got {len(views)}")
        n = views[0].shape[0]
        # both views in one pass, as in SimCLR: batch-norm statistics are taken over the 2N views
        z = self.project(torch.cat(views))
        # the global batch: the faces on the other processes are negatives too (gradients flow back)
        z_a, z_b = all_gather_with_grad(z[:n]), all_gather_with_grad(z[n:])
        loss = nt_xent(z_a, z_b, self.params.temperature)
        with torch.no_grad():
            pos_sim = float(F.cosine_similarity(z_a.float(), z_b.float(), dim=1).mean())  # -> 1 as views agree
        return LossOutput(loss, {"pos_sim": pos_sim})

    def before_optimizer_step(self, step: int) -> None:
        pass  # e.g. drop some gradients early in training

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        pass  # e.g. a momentum-encoder / EMA update, a queue

    def exported_backbone(self) -> nn.Module:
        return self.backbone  # the weights `facerep run` exports as backbone.safetensors
'''

_PRESET = '''\
# ${name}.${comp} on core's embedded SYNTHETIC faces: a smoke run of the plugin, not an experiment
# (20 steps of a ResNet-10t on 32 px views; well under a minute on a CPU).
#   facerep run ${name}/${name}_synthetic --work-dir runs/${name}_synthetic
name: ${name}_synthetic
seed: 0
data: {name: core.synthetic, params: {n: 64, size: 48, n_identities: 8, seed: 0}}
backbone: {name: core.timm, params: {model: resnet10t}}
objective:
  name: ${name}.${comp}
  params: {proj_hidden_dim: 128, proj_dim: 64, temperature: 0.2, view_size: 32}
train:
  max_steps: 20
  batch_size: 8
  num_workers: 0
  precision: fp32
  optimizer: {type: adamw, lr: 0.001, weight_decay: 0.05}
  schedule: {warmup_steps: 2}
  log_every: 5
required_plugins: [${dist}]
'''

_TESTS = '''\
"""Tests of the ${name} plugin: the loss against a value worked out by hand, the views, and the
objective as a whole against the ``facerep.testing`` contract suite (the checks core runs on every
objective). ``facerep.testing`` is a pytest plugin, loaded automatically where facerep is installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from facerep.config import structure, unstructure
from facerep.errors import ConfigError
from facerep.testing import ObjectiveContract
from facerep.types import Features, Sample
from ${package}.objective import ${Camel}Objective, ${Camel}Params, ${Camel}Views, nt_xent


def test_nt_xent_matches_the_hand_computed_value():
    # Two faces, two orthogonal unit embeddings e1, e2, and each face's two views identical:
    # the 4 views are (e1, e2, e1, e2). For view 0 (e1) the other views have cosine similarity
    # 0 (e2), 1 (e1: its positive), 0 (e2), so its loss is -log(e^(1/t) / (e^(1/t) + 2)) =
    # log(1 + 2 e^(-1/t)); by symmetry all 4 views have the same loss.
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert nt_xent(e, e.clone(), temperature=1.0).item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    assert nt_xent(e, e.clone(), temperature=0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-6)
    assert math.log(1 + 2 / math.e) == pytest.approx(0.551445, abs=1e-6)
    # embeddings are normalised: scaling a view changes nothing
    assert nt_xent(3 * e, e, temperature=1.0).item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)


def test_nt_xent_is_lower_when_views_agree():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 8, generator=g)
    agree = nt_xent(z, z + 0.01 * torch.randn(16, 8, generator=g)).item()
    random = nt_xent(z, torch.randn(16, 8, generator=g)).item()
    assert agree < random
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.zeros(1, 3), torch.zeros(1, 3))


class _LinearBackbone(nn.Module):
    """A stand-in backbone: global average pool then a linear layer (embed_dim 6)."""

    embed_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, self.embed_dim)

    def forward(self, x: torch.Tensor) -> Features:
        return Features(pooled=self.fc(x.mean((2, 3))))


def test_objective_loss_is_nt_xent_of_the_projections_and_needs_two_views():
    torch.manual_seed(0)
    obj = ${Camel}Objective(${Camel}Params(proj_hidden_dim=8, proj_dim=4, temperature=0.5), backbone=_LinearBackbone())
    views = [torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)]
    out = obj(views)
    z = obj.project(torch.cat(views))
    assert out.loss.item() == pytest.approx(nt_xent(z[:5], z[5:], 0.5).item(), rel=1e-6)
    assert set(out.logs) == {"pos_sim"}
    assert obj.exported_backbone() is obj.backbone
    with pytest.raises(ValueError, match="2 views"):
        obj([views[0]])


def test_views_are_seeded_sized_uint8_and_differ():
    face = Sample(image=np.random.default_rng(0).integers(0, 256, size=(40, 40, 3), dtype=np.uint8))
    views = ${Camel}Views(${Camel}Params(view_size=24))
    a, b = views(face, np.random.default_rng(7)), views(face, np.random.default_rng(7))
    assert len(a) == 2 and all(v.shape == (24, 24, 3) and v.dtype == np.uint8 for v in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])


def test_params_round_trip_and_are_validated_with_the_field_path():
    p = ${Camel}Params.tiny()
    assert structure(unstructure(p), ${Camel}Params) == p
    with pytest.raises(ConfigError, match=r"objective\\.params\\.temperatur: unknown key"):
        structure({"temperatur": 0.1}, ${Camel}Params, path="objective.params")
    with pytest.raises(ConfigError, match=r"flip_p must be in \\[0, 1\\]"):
        structure({"flip_p": 1.5}, ${Camel}Params, path="objective.params")


class Test${Camel}Contract(ObjectiveContract):
    """facerep's objective contract: views, forward/backward, state dict, params round trip."""

    component = "${name}.${comp}"

    @pytest.fixture(autouse=True)
    def _installed_plugins(self, facerep_plugins):
        return facerep_plugins  # the plugins installed in this environment, fresh for each test
'''
