"""Choosing what to serve (models.serving, models.runtime's providers): every device branch forced, on any machine."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import onnxruntime
import pytest

from models.bundle import read_bundle
from models.runtime import CPU, CUDA, choose_providers, session_providers
from models.serving import default_precision, open_checked


def with_speedup(bundle: Any, speedup: float | None) -> Any:
    int8 = {k: v for k, v in bundle.meta.parity.int8.items() if k != "speedup"}
    if speedup is not None:
        int8["speedup"] = speedup
    meta = dataclasses.replace(bundle.meta, parity=dataclasses.replace(bundle.meta.parity, int8=int8))
    return dataclasses.replace(bundle, meta=meta)


def test_default_precision_per_device_and_measured_speed(tiny_bundle: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    assert bundle.meta.parity.int8_speedup > 0
    assert default_precision(with_speedup(bundle, 1.6), [CPU])[0] == "int8"
    assert default_precision(with_speedup(bundle, 0.95), [CPU])[0] == "fp32"  # int8 that buys no speed
    assert default_precision(with_speedup(bundle, None), [CPU])[0] == "int8"  # bundles from before it was recorded
    assert default_precision(with_speedup(bundle, 1.6), [CUDA, CPU])[0] == "fp16"  # tensor cores
    without_fp16 = dataclasses.replace(bundle, meta=dataclasses.replace(bundle.meta, precisions=["fp32", "int8"]))
    assert default_precision(without_fp16, [CUDA, CPU])[0] == "fp32"


@pytest.mark.parametrize("cuda", [False, True])
def test_providers_follow_what_onnxruntime_offers(cuda: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    offered = [CUDA, CPU] if cuda else [CPU]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: offered)
    assert choose_providers("cpu") == [CPU]
    assert choose_providers("auto") == offered
    if cuda:
        assert choose_providers("cuda") == [CUDA, CPU]
    else:
        with pytest.raises(RuntimeError, match="device 'cuda' requested"):
            choose_providers("cuda")
    assert session_providers([CUDA, CPU], "fp32") == [(CUDA, {"use_tf32": "0"}), CPU]  # true fp32 on a GPU too
    assert session_providers([CUDA, CPU], "fp16") == [CUDA, CPU] and session_providers([CPU], "fp32") == [CPU]


def test_open_checked_says_why(tiny_bundle: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    asked = open_checked(bundle, "fp16", device="cpu")
    assert asked.scorer.precision == "fp16" and asked.reason == "fp16: asked for" and asked.check and asked.check.ok
    chosen = open_checked(with_speedup(bundle, 0.5), None, device="cpu", check="off")
    assert chosen.scorer.precision == "fp32" and "0.5x" in chosen.reason and chosen.check is None
