"""Contract suites every registered component must pass (the timm ``test_models.py`` idea).

A plugin's tests subclass a suite and name the component::

    from facerep.testing import ObjectiveContract

    class TestSwAV(ObjectiveContract):
        component = "frl.swav"

The suite builds the component with small parameters (``params_cls.tiny()`` when the params class
defines it, else the defaults, updated with the class attribute ``params``) on a small timm backbone
and checks, on CPU: views have consistent sizes and uint8 dtype; forward gives a finite scalar loss
and float logs; backward reaches the backbone; the optimizer-step callbacks run; a state-dict
round-trip reproduces the loss exactly; params survive unstructure -> structure.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import numpy as np

__all__ = ["ObjectiveContract", "build_objective", "tiny_params", "view_batch"]


def tiny_params(spec: Any, overrides: dict[str, Any] | None = None) -> Any:
    cls = spec.load_params()
    if cls is None:
        return None
    params = cls.tiny() if hasattr(cls, "tiny") else cls()
    return attrs.evolve(params, **(overrides or {}))


def build_objective(name: str, params: dict[str, Any] | None = None, backbone: str = "resnet10t", seed: int = 0) -> Any:
    import torch

    from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
    from facerep.plugins import get_plugins

    spec = get_plugins().get("objective", name)
    torch.manual_seed(seed)
    p = tiny_params(spec, params)
    target = spec.load()
    bb = TimmBackbone(TimmBackboneParams(model=backbone))
    return target(backbone=bb) if p is None else target(p, backbone=bb)


def view_batch(objective: Any, faces: Any, n: int = 4, seed: int = 0) -> list[Any]:
    """Views of ``n`` samples, batched per view index and normalised as the runner does."""
    import torch

    transform = objective.view_transform()
    per_sample = [transform(faces[i], np.random.default_rng([seed, i])) for i in range(n)]
    batched = []
    for v in range(len(per_sample[0])):
        arr = np.stack([views[v] for views in per_sample])
        batched.append(objective.backbone.preprocess(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()))
    return batched


class ObjectiveContract:
    """Subclass and set ``component`` (and optionally ``params``, ``backbone``)."""

    component: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    backbone: ClassVar[str] = "resnet10t"

    def _build(self, seed: int = 0) -> Any:
        return build_objective(self.component, dict(self.params), self.backbone, seed)

    def test_views_are_uint8_and_consistent(self, tiny_faces: Any) -> None:
        obj = self._build()
        transform = obj.view_transform()
        a = transform(tiny_faces[0], np.random.default_rng(1))
        b = transform(tiny_faces[1], np.random.default_rng(2))
        again = transform(tiny_faces[0], np.random.default_rng(1))
        assert len(a) == len(b) >= 1
        for va, vb, vc in zip(a, b, again, strict=True):
            assert va.dtype == np.uint8 and va.ndim == 3 and va.shape[2] == 3
            assert va.shape == vb.shape, "view v must have the same size for every sample"
            assert np.array_equal(va, vc), "views must be a function of (sample, rng) only"

    def test_forward_backward_finite(self, tiny_faces: Any) -> None:
        import torch

        obj = self._build()
        obj.train()
        out = obj(view_batch(obj, tiny_faces))
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
        views = view_batch(a, tiny_faces)
        a.eval()
        b.eval()
        with torch.no_grad():
            torch.manual_seed(0)
            la = a(views).loss
            torch.manual_seed(0)
            lb = b(views).loss
        torch.testing.assert_close(la, lb)

    def test_params_round_trip(self) -> None:
        from facerep.config import structure, unstructure
        from facerep.plugins import get_plugins

        spec = get_plugins().get("objective", self.component)
        p = tiny_params(spec, dict(self.params))
        if p is None:
            return
        assert structure(unstructure(p), type(p)) == p
