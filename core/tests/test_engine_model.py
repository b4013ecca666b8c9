"""The precision a run trains in: bf16 on a CPU without bf16 kernels becomes fp32, with its reason."""

from __future__ import annotations

import pytest

from facerep.engine import model


@pytest.mark.parametrize(("native", "env", "device", "want"), [
    (False, None, "cpu", "fp32"),        # emulated bf16 is ~16x slower than fp32: fall back
    (False, "emulated", "cpu", "bf16"),  # asked for explicitly
    (True, None, "cpu", "bf16"),         # AVX512-BF16 / AMX
    (False, None, "cuda", "bf16"),       # GPUs are not this CPU's business
])
def test_bf16_falls_back_to_fp32_only_on_a_cpu_without_bf16_kernels(monkeypatch, native, env, device, want):
    monkeypatch.setattr(model, "cpu_bf16_is_native", lambda: native)
    if env is None:
        monkeypatch.delenv(model.CPU_BF16_ENV, raising=False)
    else:
        monkeypatch.setenv(model.CPU_BF16_ENV, env)
    precision, why = model.effective_precision("bf16", device)
    assert precision == want
    assert (why is not None) == (want != "bf16")
    if why:
        assert "fp32" in why and model.CPU_BF16_ENV in why and "train.precision" in why


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_other_precisions_are_kept(monkeypatch, precision):
    monkeypatch.setattr(model, "cpu_bf16_is_native", lambda: False)
    assert model.effective_precision(precision, "cpu") == (precision, None)
