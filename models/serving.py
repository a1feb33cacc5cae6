"""What a bundle is served as on this machine: the precision for its device, opened and checked against the
bundle's reference probes, in one function with the reason for its choice.

Defaults: int8 on CPU when the bundle has it and its export measured it at least MIN_INT8_SPEEDUP faster than
fp32; fp16 on a GPU when the bundle has it (tensor cores), giving way to fp32 when it misses its reference probes
on that device; fp32 otherwise. A precision the user asked for is never swapped: it is served or refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .bundle import Bundle, BundleError
from .reference import DEFAULT_TOLERANCE, ReferenceCheck, check_reference
from .runtime import CPU, BundleScorer, choose_providers

log = logging.getLogger("models.serving")
# int8 trades a little agreement with fp32 for speed; without the speed it is not worth serving by default.
MIN_INT8_SPEEDUP = 1.1
CheckMode = Literal["strict", "warn", "off"]


def default_precision(bundle: Bundle, providers: Sequence[str]) -> tuple[str, str]:
    """(precision, why) for a bundle served on `providers` when the user did not choose.

    Bundles written before the int8 speed was recorded keep int8.
    """
    precisions = bundle.meta.precisions
    if providers[0] == CPU and "int8" in precisions:
        speedup = bundle.meta.parity.int8_speedup
        if speedup is None or speedup >= MIN_INT8_SPEEDUP:
            return "int8", f"int8 on CPU (the export measured it {speedup or '?'}x fp32)"
        return "fp32", f"fp32 on CPU: the bundle's int8 measured only {speedup}x fp32 at export"
    if providers[0] != CPU and "fp16" in precisions:
        return "fp16", "fp16 on GPU"
    return "fp32", "fp32: no faster graph for this device in the bundle"


@dataclass(frozen=True)
class CheckedScorer:
    """An opened scorer, how it reproduced the bundle's reference probes (None: unchecked) and why this precision."""

    scorer: BundleScorer
    check: ReferenceCheck | None
    reason: str


def open_checked(
    bundle: Bundle,
    precision: str | None = None,
    device: str = "auto",
    intra_op_threads: int = 0,
    inter_op_threads: int = 1,
    spin: bool = True,
    check: CheckMode = "strict",
    tolerance: float = DEFAULT_TOLERANCE,
) -> CheckedScorer:
    """Open the bundle's graph for `precision` (default: default_precision) and re-score its reference probes.

    A bundle whose probes tokenise or score differently here than at export raises BundleError under `strict`
    and is logged under `warn`; `off` skips the probes.
    """
    providers = choose_providers(device)
    chosen, reason = (precision, f"{precision}: asked for") if precision else default_precision(bundle, providers)

    def session(p: str) -> BundleScorer:
        return BundleScorer(bundle, p, device, intra_op_threads, inter_op_threads, spin=spin)

    scorer = session(chosen)
    if check == "off":
        return CheckedScorer(scorer, None, reason)
    std = bundle.meta.reward_scale()
    result = check_reference(scorer, bundle.meta.reference, std, tolerance)
    ours = precision is None and chosen == "fp16"  # fp16 was our choice, not the user's: fp32 may replace it
    if ours and result is not None and result.tokens_match and not result.ok:
        log.warning("%s: %s; serving fp32 instead", bundle.path, result.problem())
        scorer, reason = session("fp32"), f"fp32: fp16 missed its reference probes here ({result.problem()})"
        result = check_reference(scorer, bundle.meta.reference, std, tolerance)
    if result is None or result.ok:
        return CheckedScorer(scorer, result, reason)
    if check == "strict":
        raise BundleError(f"{bundle.path}: {result.problem()} (RM_REFERENCE_CHECK=warn serves it anyway)")
    log.warning("%s: %s (served anyway: RM_REFERENCE_CHECK=warn)", bundle.path, result.problem())
    return CheckedScorer(scorer, result, reason)
