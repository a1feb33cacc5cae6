"""The training precision: whether bf16 autocast is used, decided from measurements, and why.

On a GPU with bf16 tensor cores `auto` uses bf16. On a CPU it depends on the chip and was measured (docs/hardware.md):
where oneDNN emulates bf16 (AVX2 only) it ran 8x slower than fp32, so `auto` is off there without a trial; where
it has native kernels (AVX-512 BF16, AMX) the default recipe trained 1.72x faster but scored 1.3 and 2.5 points
lower held-out accuracy in two paired fits (seeds 0 and 1), above the 0.5-point cost bf16 may have to become the
default. So `auto` stays fp32 on CPUs too, and on a CPU with native bf16 it still times a few real training steps
of the actual backbone in both precisions, so the summary says what `--bf16 on` would buy on this machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

log = logging.getLogger("training.precision")
# What bf16 would have to buy, at most 0.5 points of accuracy cost, to be a CPU default (the cost measured on the
# default recipe was 1.3-2.5 points, so it is not; the probe's figure is recorded for `--bf16 on`).
MIN_SPEEDUP = 1.3
MEASURED_CPU_COST = "1.3-2.5 points of held-out accuracy on the default recipe (docs/hardware.md)"
# Timed steps per precision, after one warm-up step: at least MIN_CALLS and PROBE_SECONDS, at most MAX_CALLS; the
# fastest counts (the least disturbed by anything else running).
MIN_CALLS, MAX_CALLS, PROBE_SECONDS = 3, 12, 1.5


@dataclass(frozen=True)
class Bf16Decision:
    enabled: bool
    setting: str  # what was asked: auto, on, off
    device: str  # cpu or cuda
    reason: str
    fp32_step_s: float | None = None
    bf16_step_s: float | None = None

    @property
    def speedup(self) -> float | None:
        if self.fp32_step_s is None or not self.bf16_step_s:
            return None
        return self.fp32_step_s / self.bf16_step_s

    def to_dict(self) -> dict[str, Any]:
        speedup = self.speedup
        return asdict(self) | {"speedup": None if speedup is None else round(speedup, 3)}


def native_cpu_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX), rather than emulating it."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def time_step(step: Callable[[], None], bf16: bool, device: str) -> float:
    """Fastest wall time of one call of `step` (after a warm-up), under bf16 autocast or not."""
    times: list[float] = []
    for i in range(MAX_CALLS + 1):
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first call pays for kernel selection and allocation
            times.append(time.perf_counter() - started)
        if len(times) >= MIN_CALLS and sum(times) >= PROBE_SECONDS:
            break
    return min(times)


def decide_bf16(
    setting: str,
    step: Callable[[], None] | None,
    cuda: bool | None = None,
    native: Callable[[], bool] | None = None,
    timer: Callable[[Callable[[], None], bool, str], float] | None = None,
) -> Bf16Decision:
    """Resolve `--bf16 auto|on|off`. `step` runs one forward + backward of the real model on a real batch.

    `native` and `timer` are the hardware probes (default: native_cpu_bf16 and time_step, looked up at call
    time); tests replace them to force each branch on any machine.
    """
    native = native or native_cpu_bf16
    timer = timer or time_step
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = "cuda" if cuda else "cpu"
    if setting == "off":
        return Bf16Decision(False, setting, device, "--bf16 off")
    if cuda:
        supported = bool(torch.cuda.is_bf16_supported())
        if setting == "on" and not supported:
            raise ValueError("--bf16 on: this GPU has no bf16 support (use --bf16 off or auto)")
        return Bf16Decision(supported, setting, device, "GPU bf16 support" if supported else "GPU without bf16")
    has_native = native()
    if setting == "on":
        why = "--bf16 on" + ("" if has_native else " (emulated on this CPU: expect it to be slower than fp32)")
        if not has_native:
            log.warning("--bf16 on: this CPU has no native bf16 kernels; training will be slower than in fp32")
        return Bf16Decision(True, setting, device, why)
    if not has_native:
        return Bf16Decision(False, setting, device, "no native bf16 on this CPU (emulated bf16 measured 8x slower)")
    if step is None:
        return Bf16Decision(False, setting, device, "native bf16, but nothing to time it on")
    fp32, bf16 = timer(step, False, device), timer(step, True, device)
    if fp32 / bf16 < MIN_SPEEDUP:
        reason = f"native bf16 timed only {fp32 / bf16:.2f}x fp32 on this CPU (under {MIN_SPEEDUP}x)"
    else:
        reason = (
            f"native bf16 timed {fp32 / bf16:.2f}x fp32 on this CPU, but cost {MEASURED_CPU_COST}: "
            "--bf16 on trades that accuracy for the speed"
        )
    log.info("bf16 probe: fp32 %.3fs/step, bf16 %.3fs/step: %s", fp32, bf16, reason)
    return Bf16Decision(False, setting, device, reason, round(fp32, 4), round(bf16, 4))


def training_step_probe(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> Callable[[], None]:
    """One forward + backward of `model` on `batch` (rewards summed), leaving no gradients behind."""

    def step() -> None:
        rewards = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        rewards.float().sum().backward()
        model.zero_grad(set_to_none=True)

    return step
