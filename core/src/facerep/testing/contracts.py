"""Contract suites every registered component must pass (the timm ``test_models.py`` idea).

A plugin's tests subclass a suite and name the component::

    from facerep.testing import ObjectiveContract

    class TestSwAV(ObjectiveContract):
        component = "frl.swav"

The suite builds the component with small parameters (``params_cls.tiny()`` when the params class
defines it, else the defaults, updated with the class attribute ``params``) on a small timm backbone
and checks, on CPU: views have consistent sizes and uint8 dtype; forward gives a finite scalar loss
and float logs; backward reaches the backbone; the optimizer-step callbacks run; a state-dict
round-trip reproduces the loss exactly; params survive unstructure -> structure; the loss is finite
under bf16 autocast (``train.precision: bf16``); the view transform pickles (data-loader workers
receive it pickled) and gives the same views after the round trip; and a 4-step run through the
real runner (``facerep.run.run``), stopped after step 2 and resumed, exports exactly the weights of
the uninterrupted run.

Objectives whose view transform returns :class:`~facerep.types.Views` with ``extras`` (API 1.2) are
called as ``objective(views, extras=extras)`` everywhere above (the runner check batches them
through the real data loader), and their extras must have the same keys, shapes and dtypes for
every sample, depend only on ``(sample, rng)``, and survive pickling of the transform.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import numpy as np

__all__ = ["ObjectiveContract", "backbone_component", "build_objective", "call_objective", "objective_batch", "tiny_backbone",
           "tiny_params", "train_steps", "view_batch"]


def tiny_params(spec: Any, overrides: dict[str, Any] | None = None) -> Any:
    cls = spec.load_params()
    if cls is None:
        return None
    params = cls.tiny() if hasattr(cls, "tiny") else cls()
    return attrs.evolve(params, **(overrides or {}))


def backbone_component(spec: Any, backbone: str | dict[str, Any] = "resnet10t") -> dict[str, Any]:
    """``{name, params}`` of the backbone a contract builds ``spec``'s objective on: ``backbone`` when
    it is a dict (a component config when it has ``name``, else ``core.timm`` params); else the
    params class's ``tiny_backbone()`` when it defines one (e.g. a ViT for masked image modelling, or
    a plugin's own backbone as ``{name, params}``); else the timm model named ``backbone``."""
    if isinstance(backbone, dict):
        raw = dict(backbone)
    else:
        cls = spec.load_params()
        raw = dict(cls.tiny_backbone()) if cls is not None and hasattr(cls, "tiny_backbone") else {"model": backbone}
    return raw if "name" in raw else {"name": "core.timm", "params": raw}


def tiny_backbone(spec: Any, backbone: str | dict[str, Any] = "resnet10t") -> dict[str, Any]:
    """The ``core.timm`` params of :func:`backbone_component` (an error for another backbone)."""
    comp = backbone_component(spec, backbone)
    if comp["name"] != "core.timm":
        raise ValueError(f"{spec.name}: its contract backbone is {comp['name']}, not core.timm; use backbone_component")
    return comp["params"]


def build_objective(name: str, params: dict[str, Any] | None = None, backbone: str | dict[str, Any] = "resnet10t", seed: int = 0) -> Any:
    import torch

    from facerep.build import build, resolve
    from facerep.config import ComponentConfig, structure
    from facerep.plugins import get_plugins

    spec = get_plugins().get("objective", name)
    torch.manual_seed(seed)
    p = tiny_params(spec, params)
    target = spec.load()
    bb = build(resolve("backbone", structure(backbone_component(spec, backbone), ComponentConfig, path="backbone"), "backbone"))
    return target(backbone=bb) if p is None else target(p, backbone=bb)


def objective_batch(objective: Any, faces: Any, n: int = 4, seed: int = 0) -> tuple[list[Any], dict[str, Any] | None]:
    """Views of ``n`` samples, batched per view index and normalised as the runner does, and the
    batched extras (None when the view transform gives none)."""
    import torch

    from facerep.types import as_views

    transform = objective.view_transform()
    per_sample = [as_views(transform(faces[i], np.random.default_rng([seed, i]))) for i in range(n)]
    batched = []
    for v in range(len(per_sample[0].images)):
        arr = np.stack([views.images[v] for views in per_sample])
        batched.append(objective.backbone.preprocess(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()))
    if not per_sample[0].extras:
        return batched, None
    extras = {k: torch.from_numpy(np.stack([views.extras[k] for views in per_sample])) for k in per_sample[0].extras}
    return batched, extras


def view_batch(objective: Any, faces: Any, n: int = 4, seed: int = 0) -> list[Any]:
    """Views of ``n`` samples, batched per view index and normalised as the runner does."""
    return objective_batch(objective, faces, n, seed)[0]


def call_objective(objective: Any, batch: tuple[list[Any], dict[str, Any] | None]) -> Any:
    """``objective(views)``, or ``objective(views, extras=extras)`` when the batch has extras (as the runner calls it)."""
    views, extras = batch
    return objective(views) if extras is None else objective(views, extras=extras)


def train_steps(objective: Any, faces: Any, *, steps: int, batch: int, lr: float, weight_decay: float = 0.0, seed: int = 0) -> list[float]:
    """A short real training run as the runner does it, without the runner: ``steps`` AdamW steps on
    fresh views of ``batch`` random ``faces`` each, with the objective's optimizer-step callbacks.
    Returns the training losses (each finite, or an AssertionError)."""
    import torch

    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        objective.train()
        chosen = [faces[int(i)] for i in rng.choice(len(faces), batch, replace=False)]
        out = call_objective(objective, objective_batch(objective, chosen, n=batch, seed=seed * 100_003 + step))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        objective.before_optimizer_step(step)
        opt.step()
        objective.after_optimizer_step(step, steps)
        assert math.isfinite(out.loss.item()), f"non-finite loss at step {step}"
        losses.append(out.loss.item())
    return losses


class ObjectiveContract:
    """Subclass and set ``component`` (and optionally ``params``, ``backbone``, ``image_size``:
    the side of the synthetic faces the runner check trains on). A params class with a
    ``tiny_backbone()`` classmethod (``core.timm`` params, e.g. a small ViT) overrides ``backbone``."""

    component: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    backbone: ClassVar[str] = "resnet10t"
    image_size: ClassVar[int] = 64

    def _build(self, seed: int = 0) -> Any:
        return build_objective(self.component, dict(self.params), self.backbone, seed)

    def test_views_are_uint8_and_consistent(self, tiny_faces: Any) -> None:
        from facerep.types import as_views

        obj = self._build()
        transform = obj.view_transform()
        a = as_views(transform(tiny_faces[0], np.random.default_rng(1)))
        b = as_views(transform(tiny_faces[1], np.random.default_rng(2)))
        again = as_views(transform(tiny_faces[0], np.random.default_rng(1)))
        assert len(a.images) == len(b.images) >= 1
        for va, vb, vc in zip(a.images, b.images, again.images, strict=True):
            assert va.dtype == np.uint8 and va.ndim == 3 and va.shape[2] == 3
            assert va.shape == vb.shape, "view v must have the same size for every sample"
            assert np.array_equal(va, vc), "views must be a function of (sample, rng) only"
        assert a.extras.keys() == b.extras.keys() == again.extras.keys()
        for key in a.extras:
            ea, eb = a.extras[key], b.extras[key]
            assert isinstance(ea, np.ndarray) and ea.dtype != object, f"extras[{key!r}] must be a numeric numpy array"
            assert (ea.shape, ea.dtype) == (eb.shape, eb.dtype), f"extras[{key!r}] must have one shape and dtype for every sample"
            assert np.array_equal(ea, again.extras[key]), f"extras[{key!r}] must be a function of (sample, rng) only"

    def test_forward_backward_finite(self, tiny_faces: Any) -> None:
        import torch

        obj = self._build()
        obj.train()
        out = call_objective(obj, objective_batch(obj, tiny_faces))
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert all(isinstance(v, float) and math.isfinite(v) for v in out.logs.values())
        out.loss.backward()
        grads = [p.grad for p in obj.backbone.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached the backbone"
        obj.before_optimizer_step(0)
        with torch.no_grad():
            for p in obj.parameters():
                if p.grad is not None:
                    p -= 0.01 * p.grad
        obj.after_optimizer_step(0, 10)
        assert obj.exported_backbone() is not None

    def test_state_dict_round_trip(self, tiny_faces: Any) -> None:
        import torch

        a = self._build(seed=0)
        b = self._build(seed=1)
        b.load_state_dict(a.state_dict())
        batch = objective_batch(a, tiny_faces)
        a.eval()
        b.eval()
        with torch.no_grad():
            torch.manual_seed(0)
            la = call_objective(a, batch).loss
            torch.manual_seed(0)
            lb = call_objective(b, batch).loss
        torch.testing.assert_close(la, lb)

    def test_params_round_trip(self) -> None:
        from facerep.config import structure, unstructure
        from facerep.plugins import get_plugins

        spec = get_plugins().get("objective", self.component)
        p = tiny_params(spec, dict(self.params))
        if p is None:
            return
        assert structure(unstructure(p), type(p)) == p

    def test_bf16_autocast(self, tiny_faces: Any) -> None:
        import torch

        obj = self._build()
        obj.train()
        batch = objective_batch(obj, tiny_faces)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = call_objective(obj, batch)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss.float()), "loss must stay finite under bf16 autocast"
        out.loss.float().backward()
        assert any(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in obj.backbone.parameters())

    def test_view_transform_pickles(self, tiny_faces: Any) -> None:
        import pickle

        from facerep.types import as_views

        transform = self._build().view_transform()
        again = pickle.loads(pickle.dumps(transform))
        a = as_views(transform(tiny_faces[0], np.random.default_rng(7)))
        b = as_views(again(tiny_faces[0], np.random.default_rng(7)))
        assert len(a.images) == len(b.images) and all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
        assert a.extras.keys() == b.extras.keys() and all(np.array_equal(a.extras[k], b.extras[k]) for k in a.extras)

    def test_stop_and_resume_through_the_runner(self, tmp_path: Any) -> None:
        import yaml
        from safetensors.torch import load_file

        from facerep.config import unstructure
        from facerep.plugins import get_plugins
        from facerep.run import run

        spec = get_plugins().get("objective", self.component)
        params = tiny_params(spec, dict(self.params))
        cfg = {
            "name": "contract",
            "seed": 1,
            "data": {"name": "core.synthetic", "params": {"n": 24, "size": self.image_size, "n_identities": 4}},
            "backbone": backbone_component(spec, self.backbone),
            "objective": {"name": self.component, "params": unstructure(params) if params is not None else {}},
            "train": {"max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "log_every": 1, "channels_last": False,
                      "optimizer": {"type": "sgd", "lr": 0.01, "weight_decay": 1e-4}, "schedule": {"warmup_steps": 1}},
        }
        path = tmp_path / "contract.yaml"
        path.write_text(yaml.safe_dump(cfg))
        full = run(path, work_dir=tmp_path / "full")
        assert run(path, work_dir=tmp_path / "part", stop_after=2).get("backbone") is None
        resumed = run(path, work_dir=tmp_path / "part", resume=True)
        a, b = load_file(full["backbone"]), load_file(resumed["backbone"])
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].equal(b[key]), f"{key}: stop after step 2 + resume differs from the uninterrupted run"
