"""The bf16 decision: every branch forced on any CPU, and real fits in bf16 that export fp32 graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from builders import tiny_fit_argv

import training.precision
from models.bundle import read_bundle
from training.fit import main
from training.precision import MIN_SPEEDUP, decide_bf16


def never(*args: Any) -> Any:
    raise AssertionError("this branch must decide without timing anything")


def timed(fp32: float, bf16: float) -> Any:
    return lambda step, use_bf16, device: bf16 if use_bf16 else fp32


def test_every_branch_of_the_bf16_decision() -> None:
    step = lambda: None  # noqa: E731
    assert not decide_bf16("off", step, cuda=False, native=never, timer=never).enabled
    avx2 = decide_bf16("auto", step, cuda=False, native=lambda: False, timer=never)
    assert not avx2.enabled and "no native bf16" in avx2.reason and avx2.speedup is None
    # Native bf16 that is faster still stays off by default (its measured accuracy cost), with the figures kept.
    fast = decide_bf16("auto", step, cuda=False, native=lambda: True, timer=timed(2.6, 1.1))
    assert not fast.enabled and fast.speedup == pytest.approx(2.6 / 1.1, rel=1e-3)
    assert fast.to_dict()["fp32_step_s"] == 2.6 and "--bf16 on trades" in fast.reason
    slow = decide_bf16("auto", step, cuda=False, native=lambda: True, timer=timed(1.0, 1.0 / (MIN_SPEEDUP - 0.05)))
    assert not slow.enabled and "under" in slow.reason
    assert not decide_bf16("auto", None, cuda=False, native=lambda: True, timer=never).enabled
    forced = decide_bf16("on", step, cuda=False, native=lambda: False, timer=never)
    assert forced.enabled and "emulated" in forced.reason


def test_gpu_branches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert decide_bf16("auto", None, cuda=True, native=never, timer=never).enabled
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not decide_bf16("auto", None, cuda=True, native=never, timer=never).enabled
    with pytest.raises(ValueError, match="no bf16 support"):
        decide_bf16("on", None, cuda=True, native=never, timer=never)


def onnx_types(path: Path) -> set[int]:
    graph = onnx.load(str(path)).graph
    types = {t.data_type for t in graph.initializer}
    types |= {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types |= {a.i for n in graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    return types


def test_a_bf16_fit_on_a_cpu_exports_fp32_graphs(tiny_bert: Path, synthetic_data: Path, tmp_path: Path) -> None:
    """--bf16 on works on any CPU (emulated where it is not native) and the bundle still holds fp32 graphs."""
    out = tmp_path / "bf16"
    argv = tiny_fit_argv(tiny_bert, synthetic_data, out, bf16="on", epochs=3)
    assert main(argv) == 0
    meta = read_bundle(out).meta
    assert meta.training["summary"]["bf16"]["enabled"] is True
    assert meta.parity.onnx_vs_torch_max_abs <= 1e-4
    assert onnx.TensorProto.BFLOAT16 not in onnx_types(out / "model.onnx")
    assert meta.eval_metrics["fp32"]["overall"]["accuracy"] >= 0.9


@pytest.mark.parametrize("native", [False, True])
def test_auto_decides_from_the_probe_on_either_kind_of_cpu(
    native: bool, tiny_bert: Path, synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced AVX2-like (no native bf16: off, nothing timed) and forced native (the real probe runs on this CPU's
    real kernels and its figures are recorded), whatever this machine has."""
    monkeypatch.setattr(training.precision, "native_cpu_bf16", lambda: native)
    out = tmp_path / f"auto-{native}"
    argv = tiny_fit_argv(tiny_bert, synthetic_data, out, bf16="auto", epochs=1, int8=False, fp16=False)
    assert main(argv) == 0
    decision = read_bundle(out).meta.training["summary"]["bf16"]
    assert decision["setting"] == "auto" and decision["device"] == "cpu"
    if native:
        assert decision["fp32_step_s"] > 0 and decision["bf16_step_s"] > 0 and decision["enabled"] is False
    else:
        assert decision["enabled"] is False and decision["speedup"] is None
