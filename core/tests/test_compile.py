"""``train.compile``'s mechanics without compiling anything (torch.compile is lazy: nothing is
compiled until a call): which modules, in place, copies eager, one warning and eager results when
a compile fails. The compiled runs themselves are in ``integration_tests/test_compile.py``."""

from __future__ import annotations

import copy

import torch
from torch import nn

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.engine import model as engine_model
from facerep.engine.model import compile_backbones


class _Momentum(nn.Module):
    """A MoCo-shaped objective: a backbone, its key copy, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = TimmBackbone(TimmBackboneParams(model="resnet10t"))
        self.head = nn.Linear(self.backbone.embed_dim, 4)
        self.key_backbone = copy.deepcopy(self.backbone).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            k = self.key_backbone(x).pooled
        return self.head(self.backbone(x).pooled) + k.sum()


def test_backbone_and_its_copies_are_compiled_in_place():
    torch.manual_seed(0)
    objective = _Momentum()
    keys = list(objective.state_dict())
    names = compile_backbones(objective, warn=lambda msg: None)
    assert names == ["backbone", "key_backbone"]
    assert objective.backbone._compiled_call_impl is not None and objective.key_backbone._compiled_call_impl is not None
    assert objective.head._compiled_call_impl is None
    assert list(objective.state_dict()) == keys, "no _orig_mod. prefix: checkpoints and exports keep their keys"
    clone = copy.deepcopy(objective.backbone)
    assert clone._compiled_call_impl is None, "a copy runs its own forward (the compiled function runs the original's)"


def test_a_failed_compile_warns_once_and_runs_eager(monkeypatch):
    """What inductor raises without a C++ compiler (InductorError, a ShortenTraceback), faked: the
    modules go back to eager after one warning and compute what the eager modules do."""
    import torch._dynamo.exc

    calls = []

    def failing_compile(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(fn)
            raise torch._dynamo.exc.ShortenTraceback("InvalidCxxCompiler: No working C++ compiler found\nmore", first_useful_frame=None)
        return compiled

    monkeypatch.setattr(engine_model.torch, "compile", failing_compile)
    torch.manual_seed(0)
    objective = _Momentum().eval()
    reference = copy.deepcopy(objective)
    warnings: list[str] = []
    compile_backbones(objective, warn=warnings.append)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):
        assert torch.equal(objective(x), reference(x))
    assert len(calls) == 1, "the first failure turns every compiled module eager"
    assert len(warnings) == 1 and "cannot compile here (ShortenTraceback: InvalidCxxCompiler: No working C++ compiler found)" in warnings[0]
    assert objective.backbone._compiled_call_impl is None and objective.key_backbone._compiled_call_impl is None
