"""``train.compile``'s mechanics without compiling anything (torch.compile is lazy: nothing is
compiled until a call): which modules, in place, copies eager, one warning and eager results when
a compile fails. The compiled runs themselves are in ``integration_tests/test_compile.py``."""

from __future__ import annotations

import copy
import sys

import attrs
import pytest
import torch
import torch._dynamo.exc
from torch import nn

import facerep.types
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


def _fake_compile(monkeypatch, error: Exception) -> list:
    """``torch.compile`` whose compiled functions raise ``error`` (the compile failing at the first
    call); returns the calls made to them."""
    calls = []

    def failing_compile(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(fn)
            raise error
        return compiled

    monkeypatch.setattr(engine_model.torch, "compile", failing_compile)
    return calls


@pytest.mark.parametrize(("error", "shown", "hint"), [
    # what inductor raises without a C++ compiler (InductorError, a ShortenTraceback)
    (torch._dynamo.exc.ShortenTraceback("InvalidCxxCompiler: No working C++ compiler found\nmore", first_useful_frame=None),
     "ShortenTraceback: InvalidCxxCompiler: No working C++ compiler found", "C++ compiler"),
    # what torch 2.11's dynamo raised building its guards on attrs' generated Features.__init__
    (torch._dynamo.exc.InternalTorchDynamoError("AttributeError: module 'facerep.types' has no attribute 'NOTHING'"),
     "InternalTorchDynamoError: AttributeError: module 'facerep.types' has no attribute 'NOTHING'", "Another torch version"),
])
def test_a_failed_compile_warns_once_and_runs_eager(monkeypatch, error, shown, hint):
    """A compile failure, faked: the modules go back to eager after one warning and compute what the
    eager modules do; the key encoder, which has not been called yet, goes eager with them."""
    calls = _fake_compile(monkeypatch, error)
    torch.manual_seed(0)
    objective = _Momentum().eval()
    reference = copy.deepcopy(objective)
    warnings: list[str] = []
    compile_backbones(objective, warn=warnings.append)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):
        assert torch.equal(objective(x), reference(x))
    assert len(calls) == 1, "the first failure turns every compiled module eager"
    assert len(warnings) == 1 and f"cannot compile here ({shown})" in warnings[0] and hint in warnings[0], warnings
    assert objective.backbone._compiled_call_impl is None and objective.key_backbone._compiled_call_impl is None


def test_an_error_of_the_forward_itself_is_raised_not_taken_for_a_compile_failure(monkeypatch):
    """torch 2.14's dynamo turns a shape mismatch it meets tracing into TorchRuntimeError: the eager
    rerun raises the forward's own error (eager's message and traceback), no warning, the modules
    stay compiled."""
    calls = _fake_compile(monkeypatch, torch._dynamo.exc.TorchRuntimeError("RuntimeError when making fake tensor call"))
    objective = _Momentum().eval()
    warnings: list[str] = []
    compile_backbones(objective, warn=warnings.append)
    with pytest.raises(RuntimeError, match=r"expected input.* to have 3 channels") as raised:
        objective(torch.randn(2, 4, 32, 32))
    assert not isinstance(raised.value, torch._dynamo.exc.TorchDynamoException)
    assert raised.value.__context__ is None, "the compile failure is not shown as the error's cause"
    assert any("TorchRuntimeError" in note for note in raised.value.__notes__)
    assert warnings == [] and len(calls) == 1
    assert objective.backbone._compiled_call_impl is not None and objective.key_backbone._compiled_call_impl is not None


def test_attrs_generated_init_reads_globals_where_dynamo_guards_them():
    """A backbone's forward builds a Features, so dynamo traces its attrs-generated ``__init__``.
    torch <= 2.13's dynamo guards each global a traced function reads as an attribute of the module
    ``__globals__["__name__"]`` names, when there is one, else in the globals dict itself; attrs runs
    the method in a copy of the module's globals plus ``NOTHING`` and the ``__attr_factory_*``
    defaults, which torch 2.11 then failed to find (``facerep.types.NOTHING``)."""
    classes = [v for v in vars(facerep.types).values() if isinstance(v, type) and attrs.has(v)]
    assert facerep.types.Features in classes and "NOTHING" in facerep.types.Features.__init__.__code__.co_names
    for cls in classes:
        scope = cls.__init__.__globals__
        read = [name for name in cls.__init__.__code__.co_names if name in scope]
        if "__name__" in scope:
            module = sys.modules[scope["__name__"]]
            missing = [name for name in read if getattr(module, name, None) is not scope[name]]
            assert not missing, f"{cls.__name__}.__init__ reads {missing}, which dynamo <= 2.13 guards as {module.__name__}.<name>"
