"""The typed records inside a bundle's metadata — reward statistics, reference probes, the export's checks, where the
reward is read — each parsed and validated once (`from_dict`, raising BundleError) and written back as it was read
(`to_dict`, its exact inverse)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class BundleError(Exception):
    """A bundle that cannot be used; the message names the folder and what is wrong with it."""


def _number(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BundleError(f"{where}.{key} must be a finite number, got {value!r}")
    return float(value)


def _exactly(data: Any, keys: set[str], optional: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise BundleError(f"{where} must be an object, got {data!r}")
    missing, unknown = keys - set(data), set(data) - keys - optional
    if missing or unknown:
        raise BundleError(f"{where}: missing {sorted(missing)} / unknown {sorted(unknown)} fields")
    return data


@dataclass(frozen=True)
class Moments:
    """A reward's mean and (positive) standard deviation on the evaluation pairs."""

    mean: float
    std: float

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Moments:
        data = _exactly(data, {"mean", "std"}, set(), where)
        moments = cls(_number(data, "mean", where), _number(data, "std", where))
        if moments.std <= 0:
            raise BundleError(f"{where}.std must be positive, got {moments.std}")
        return moments

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class RewardStats:
    """One precision's reward statistics: the (combined) reward's moments, and each head's for a bundle with several
    objectives (in the bundle's objective order) — what `normalize` divides by."""

    overall: Moments
    objectives: tuple[tuple[str, Moments], ...] = ()

    @classmethod
    def from_dict(cls, data: Any, objectives: Sequence[str], where: str) -> RewardStats:
        data = _exactly(data, {"mean", "std"}, {"objectives"}, where)
        overall = Moments.from_dict({k: data[k] for k in ("mean", "std")}, where)
        if not objectives:
            if "objectives" in data:
                raise BundleError(f"{where}.objectives: a bundle with one reward has no per-objective statistics")
            return cls(overall)
        heads = _exactly(data.get("objectives"), set(objectives), set(), f"{where}.objectives")
        return cls(overall, tuple((n, Moments.from_dict(heads[n], f"{where}.objectives.{n}")) for n in objectives))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.overall.to_dict()
        if self.objectives:
            out["objectives"] = {name: m.to_dict() for name, m in self.objectives}
        return out

    @property
    def scale(self) -> float:
        """The typical size of a reward difference: the std (the smallest head's, with several objectives)."""
        return min(m.std for _, m in self.objectives) if self.objectives else self.overall.std

    def normalize(self, heads: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(r − mean) / std in float64; with several objectives each head by its own, then combined by `weights`."""
        values = np.asarray(heads, dtype=np.float64)
        if values.ndim == 1:
            return (values - self.overall.mean) / self.overall.std
        means = np.array([m.mean for _, m in self.objectives])
        stds = np.array([m.std for _, m in self.objectives])
        assert weights is not None, "several objectives need their weights"
        result: np.ndarray = ((values - means) / stds) @ weights
        return result


def _reward_row(value: Any, objectives: int) -> bool:
    """A probe's reward: a float, or one float per objective."""
    if not objectives:
        return isinstance(value, float)
    return isinstance(value, list) and len(value) == objectives and all(isinstance(x, float) for x in value)


@dataclass(frozen=True)
class Reference:
    """The reference probes: texts, the digest of their token ids, and their rewards per precision (models.reference
    re-scores them at load)."""

    prompts: tuple[str, ...]
    completions: tuple[str, ...]
    ids_sha256: str
    rewards: Mapping[str, list[Any]]  # precision -> one reward per probe (a list per probe for several objectives)

    @classmethod
    def from_dict(cls, data: Any, objectives: int) -> Reference:
        problem = (
            "invalid reference: needs prompts, completions, ids_sha256 and fp32 rewards (one float per probe for "
            "each precision)"
        )
        try:
            data = _exactly(data, {"prompts", "completions", "ids_sha256", "rewards"}, set(), "reference")
            ref = cls(tuple(data["prompts"]), tuple(data["completions"]), data["ids_sha256"], dict(data["rewards"]))
            n = len(ref.prompts)
            ok = (
                len(ref.completions) == n
                and all(isinstance(t, str) for t in ref.prompts + ref.completions)
                and isinstance(ref.ids_sha256, str)
                and "fp32" in ref.rewards  # rewards of precisions the bundle no longer ships are never compared
                and all(isinstance(r, list) and len(r) == n for r in ref.rewards.values())
                and all(_reward_row(x, objectives) for r in ref.rewards.values() for x in r)
            )
        except (BundleError, TypeError, ValueError):
            ok = False
        if not ok:
            raise BundleError(problem)
        return ref

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": list(self.prompts),
            "completions": list(self.completions),
            "ids_sha256": self.ids_sha256,
            "rewards": dict(self.rewards),
        }


@dataclass(frozen=True)
class Fp16Check:
    """Largest |fp16 − fp32| reward over `texts` texts, against `limit`; `error` when fp16 could not run at all."""

    max_abs_diff: float
    limit: float
    texts: int
    error: str = ""

    @property
    def kept(self) -> bool:
        return not self.error and self.max_abs_diff <= self.limit  # False for NaN too

    @classmethod
    def from_dict(cls, data: Any) -> Fp16Check:
        if isinstance(data, Mapping) and data.get("error"):
            _exactly(data, {"kept", "error"}, set(), "parity.fp16")
            return cls(float("nan"), float("nan"), 0, str(data["error"]))
        data = _exactly(data, {"kept", "max_abs_diff", "limit", "texts"}, set(), "parity.fp16")
        return cls(float(data["max_abs_diff"]), float(data["limit"]), int(data["texts"]))

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"kept": False, "error": self.error}
        return {"kept": self.kept, "max_abs_diff": self.max_abs_diff, "limit": self.limit, "texts": self.texts}


@dataclass(frozen=True)
class ExportChecks:
    """What the export measured: ONNX vs torch parity, and the int8 and fp16 checks (when those were tried).
    `int8` keeps every figure the int8 choice recorded; `speedup` is the one serving reads."""

    onnx_vs_torch_max_abs: float | None = None
    parity_texts: int | None = None
    int8: Mapping[str, Any] | None = None
    fp16: Fp16Check | None = None

    @classmethod
    def from_dict(cls, data: Any) -> ExportChecks:
        data = _exactly(data, set(), {"onnx_vs_torch_max_abs", "parity_texts", "int8", "fp16"}, "parity")
        int8 = data.get("int8")
        if int8 is not None and not (isinstance(int8, Mapping) and "agreement" in int8):
            raise BundleError(f"parity.int8 must record the int8 agreement, got {int8!r}")
        return cls(
            data.get("onnx_vs_torch_max_abs"),
            data.get("parity_texts"),
            dict(int8) if int8 is not None else None,
            Fp16Check.from_dict(data["fp16"]) if "fp16" in data else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.onnx_vs_torch_max_abs is not None:
            out["onnx_vs_torch_max_abs"] = self.onnx_vs_torch_max_abs
        if self.parity_texts is not None:
            out["parity_texts"] = self.parity_texts
        if self.int8 is not None:
            out["int8"] = dict(self.int8)
        if self.fp16 is not None:
            out["fp16"] = self.fp16.to_dict()
        return out

    @property
    def int8_speedup(self) -> float | None:
        """How much faster than fp32 the int8 graph ran at export (None: not measured)."""
        speedup = self.int8.get("speedup") if self.int8 else None
        return float(speedup) if isinstance(speedup, int | float) else None


@dataclass(frozen=True)
class RewardHead:
    """Where the reward comes from, as /info shows it: the model family, the pooling, the position it is read at, the
    label; `extra` keeps whatever else the writer recorded (the source of an import, a label's name)."""

    family: str
    architecture: str
    pooling: str
    read_at: str
    label_index: int | None = None
    heads: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> RewardHead:
        required = {"family", "architecture", "pooling", "read_at"}
        if not isinstance(data, Mapping) or not required <= set(data):
            raise BundleError(f"reward_head needs {sorted(required)}, got {data!r}")
        known = {k: data[k] for k in (*required, "label_index", "heads") if k in data}
        return cls(**known, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        core = {k: getattr(self, k) for k in ("family", "architecture", "pooling", "read_at", "label_index", "heads")}
        return {k: v for k, v in core.items() if v is not None} | dict(self.extra)
