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
    """Subclass and set ``component`` (and optionally ``params``, ``backbone``, ``image_size``:
    the side of the synthetic faces the runner check trains on)."""

    component: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    backbone: ClassVar[str] = "resnet10t"
    image_size: ClassVar[int] = 64

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

    def test_bf16_autocast(self, tiny_faces: Any) -> None:
        import torch

        obj = self._build()
        obj.train()
        views = view_batch(obj, tiny_faces)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = obj(views)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss.float()), "loss must stay finite under bf16 autocast"
        out.loss.float().backward()
        assert any(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in obj.backbone.parameters())

    def test_view_transform_pickles(self, tiny_faces: Any) -> None:
        import pickle

        transform = self._build().view_transform()
        again = pickle.loads(pickle.dumps(transform))
        a = transform(tiny_faces[0], np.random.default_rng(7))
        b = again(tiny_faces[0], np.random.default_rng(7))
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    def test_stop_and_resume_through_the_runner(self, tmp_path: Any) -> None:
        import yaml
        from safetensors.torch import load_file

        from facerep.config import unstructure
        from facerep.plugins import get_plugins
        from facerep.run import run

        params = tiny_params(get_plugins().get("objective", self.component), dict(self.params))
        cfg = {
            "name": "contract",
            "seed": 1,
            "data": {"name": "core.synthetic", "params": {"n": 24, "size": self.image_size, "n_identities": 4}},
            "backbone": {"name": "core.timm", "params": {"model": self.backbone}},
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
