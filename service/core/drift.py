"""Reward-drift signals: the last scored pairs kept in a bounded window, summarised into rm_drift_* gauges only when
Prometheus (or /info) asks, so the request path pays for an append and nothing else.

During RL the service sees every sample the policy writes; reward hacking shows here first: rewards rising while
completions grow longer (length correlation), pile above what the model was evaluated on (shift, high share), get cut
to the model's max length (truncated share) or collapse onto the same text (duplicate share).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from models.records import Moments, RewardStats

QUANTILES = (0.05, 0.5, 0.95)
HIGH_Z = 2.0  # "high" reward: above the evaluation mean + 2 std (about 2% of the evaluation answers if normal)


@dataclass(frozen=True, slots=True)
class _Scored:
    """One request's pairs, as the request path hands them over (no copies, no statistics)."""

    model_id: str
    rewards: np.ndarray  # (n,) the combined raw reward
    heads: np.ndarray | None  # (n, k) per objective, for a bundle with several
    truncated: np.ndarray  # (n,) bool
    lengths: list[int]  # completion characters
    hashes: list[int]  # of the completion text: equal texts, equal hashes


def _text_key(text: Any) -> tuple[int, int]:
    """(characters, hash) of a completion: a string, or a message list (its contents, as the size limits count)."""
    if isinstance(text, str):
        return len(text), hash(text)
    parts = tuple((str(m.get("role")), str(m.get("content") or "")) for m in text)
    return sum(len(c) for _, c in parts), hash(parts)


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given their average rank (as Spearman's correlation needs)."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    out = np.empty(len(x), dtype=np.float64)
    out[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side is constant (no order to correlate)."""
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else math.nan


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)}


def _shift(quantiles: Mapping[str, float], moments: Moments) -> dict[str, float]:
    """Each quantile in units of the evaluation std from the evaluation mean (0.05/0.5/0.95 of a normal evaluation
    distribution would read about -1.6/0/+1.6)."""
    return {q: (v - moments.mean) / moments.std for q, v in quantiles.items()}


class DriftWindow:
    """The last `size` scored pairs of the live model (and the recipe's component values), summarised on demand.

    `record` is all the request path does: an append under a lock. Memory is bounded: whole requests leave from the
    old end once the newer ones alone hold `size` pairs, so at most `size` + one request's pairs are kept. A model
    swap starts a new window (another model's rewards are on another scale)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._scored: deque[_Scored] = deque()
        self._pairs = 0
        self._components: deque[tuple[int, Mapping[str, Sequence[float | None]]]] = deque()
        self._component_pairs = 0
        self._model_id: str | None = None
        self._stats: RewardStats | None = None
        self._objectives: tuple[str, ...] = ()
        self._version = 0  # bumped by every change; the summary is recomputed only after one
        self._summary: tuple[int, dict[str, Any]] | None = None

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def use_model(self, model_id: str, stats: RewardStats | None, objectives: Sequence[str]) -> None:
        """A model went live: its evaluation statistics are the baseline, and the window starts afresh unless it
        is the same model again (a reload of the same bundle keeps its history)."""
        with self._lock:
            if model_id != self._model_id:
                self._scored.clear()
                self._pairs = 0
                self._components.clear()
                self._component_pairs = 0
            self._model_id, self._stats, self._objectives = model_id, stats, tuple(objectives)
            self._version += 1

    def record(
        self,
        model_id: str,
        rewards: np.ndarray,
        heads: np.ndarray | None,
        truncated: np.ndarray,
        completions: Sequence[Any],
    ) -> None:
        """One request's scored pairs, called on the request path (so: lengths and hashes, one append): the
        combined raw rewards (n,), each objective's (n, k) for a bundle with several, and which were cut."""
        if not self.size or not len(truncated):
            return
        keys = [_text_key(c) for c in completions]
        entry = _Scored(model_id, rewards, heads, truncated, [k[0] for k in keys], [k[1] for k in keys])
        with self._lock:
            self._scored.append(entry)
            self._pairs += len(truncated)
            while self._pairs - len(self._scored[0].truncated) >= self.size:
                self._pairs -= len(self._scored.popleft().truncated)
            self._version += 1

    def record_components(self, components: Mapping[str, Sequence[float | None]]) -> None:
        """One request's reward-recipe components by name (None: the sample had no value); kept as given (the
        request's own lists, never changed after), converted when summarised."""
        if not self.size or not components:
            return
        n = len(next(iter(components.values())))
        with self._lock:
            self._components.append((n, components))
            self._component_pairs += n
            while self._component_pairs - self._components[0][0] >= self.size:
                self._component_pairs -= self._components.popleft()[0]
            self._version += 1

    def summary(self) -> dict[str, Any]:
        """The signals over the window (recomputed only when something was recorded since the last call)."""
        with self._lock:
            if self._summary is not None and self._summary[0] == self._version:
                return self._summary[1]
            version = self._version
            scored = [s for s in self._scored if s.model_id == self._model_id]
            components = [c for _, c in self._components]
            stats, objectives = self._stats, self._objectives
        result = _summarise(scored, components, stats, objectives)  # outside the lock: requests keep recording
        with self._lock:
            self._summary = (version, result)
        return result

    def info(self) -> dict[str, Any]:
        """The summary as /info shows it: JSON, so an undefined value (NaN) is null."""
        return {"window_size": self.size, **_json_safe(self.summary())}

    def describe(self) -> list[Metric]:
        return []  # computed on scrape: nothing to check for duplicate names at registration

    def collect(self) -> Iterator[Metric]:
        """The rm_drift_* gauges (a prometheus_client custom collector)."""
        if not self.size:
            return
        s = self.summary()
        yield _gauge(
            "rm_drift_window_pairs", "Scored pairs in the drift window (the last RM_DRIFT_WINDOW).", s["window_pairs"]
        )
        if not s["window_pairs"]:
            return
        for name, key, text in _FAMILIES:
            if s.get(key) is not None:
                family = GaugeMetricFamily(name, text, labels=["quantile"])
                for q, v in s[key].items():
                    family.add_metric([q], v)
                yield family
        for name, key, text in _SCALARS:
            if s.get(key) is not None:
                yield _gauge(name, text, s[key])
        for name, key, text in _PER_OBJECTIVE:
            if s.get(key):
                family = GaugeMetricFamily(name, text, labels=["objective", "quantile"])
                for objective, by_q in s[key].items():
                    for q, v in by_q.items():
                        family.add_metric([objective, q], v)
                yield family
        if s.get("component_mean"):
            family = GaugeMetricFamily(
                "rm_drift_component_mean",
                "Mean value of each reward-recipe component over the window (samples without a value left out).",
                labels=["component"],
            )
            for component, v in s["component_mean"].items():
                family.add_metric([component], v)
            yield family


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


_FAMILIES = [
    ("rm_drift_reward", "reward_quantiles", "Quantiles of the raw reward over the drift window."),
    (
        "rm_drift_reward_shift",
        "reward_shift",
        "Each reward quantile of the window in evaluation std from the evaluation mean (the bundle's statistics).",
    ),
    ("rm_drift_completion_chars", "completion_chars", "Quantiles of completion length (characters) over the window."),
]
_SCALARS = [
    (
        "rm_drift_length_correlation",
        "length_correlation",
        "Spearman correlation of reward with completion length over the window (NaN: one length or one reward).",
    ),
    ("rm_drift_truncated_share", "truncated_share", "Share of the window's pairs cut to the model's max length."),
    (
        "rm_drift_duplicate_share",
        "duplicate_share",
        "Share of the window's completions that repeat one already in the window (1 - distinct / all).",
    ),
    (
        "rm_drift_reward_high_share",
        "high_share",
        "Share of the window's rewards above the evaluation mean + 2 std (about 0.02 on the evaluation answers).",
    ),
]
_PER_OBJECTIVE = [
    ("rm_drift_objective_reward", "objective_quantiles", "Quantiles of each objective's raw reward over the window."),
    (
        "rm_drift_objective_shift",
        "objective_shift",
        "Each objective's reward quantiles in its evaluation std from its evaluation mean.",
    ),
]


def _summarise(
    scored: list[_Scored],
    components: list[Mapping[str, Sequence[float | None]]],
    stats: RewardStats | None,
    objectives: tuple[str, ...],
) -> dict[str, Any]:
    pairs = sum(len(s.truncated) for s in scored)
    out: dict[str, Any] = {"window_pairs": pairs}
    if pairs:
        rewards = np.concatenate([s.rewards for s in scored]).astype(np.float64)
        lengths = np.fromiter(itertools.chain.from_iterable(s.lengths for s in scored), np.int64, pairs)
        distinct = len(set(itertools.chain.from_iterable(s.hashes for s in scored)))
        out |= {
            "reward_quantiles": _quantiles(rewards),
            "completion_chars": _quantiles(lengths.astype(np.float64)),
            "length_correlation": spearman(rewards, lengths.astype(np.float64)),
            "truncated_share": float(np.concatenate([s.truncated for s in scored]).mean()),
            "duplicate_share": 1.0 - distinct / pairs,
        }
        if stats is not None:
            out["reward_shift"] = _shift(out["reward_quantiles"], stats.overall)
            out["high_share"] = float(np.mean(rewards > stats.overall.mean + HIGH_Z * stats.overall.std))
        heads = [s.heads for s in scored if s.heads is not None]
        if objectives and heads and sum(len(h) for h in heads) == pairs:
            stacked = np.concatenate(heads).astype(np.float64)
            by_name = {name: _quantiles(stacked[:, i]) for i, name in enumerate(objectives)}
            out["objective_quantiles"] = by_name
            if stats is not None and stats.objectives:
                out["objective_shift"] = {name: _shift(by_name[name], m) for name, m in stats.objectives}
    if components:
        means = {}
        for name in dict.fromkeys(itertools.chain.from_iterable(components)):
            values = [v for c in components for v in c.get(name, ()) if v is not None and math.isfinite(v)]
            if values:
                means[name] = sum(values) / len(values)
        out["component_mean"] = means
    return out
