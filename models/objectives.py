"""Multi-objective rewards: how a bundle's heads (one reward per objective) combine into the one reward, with the
bundle's default weights or a caller's, raw or normalised head by head."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .bundle import BundleMeta


class ObjectiveError(ValueError):
    """Weights that name no objective of the bundle, or are not finite numbers."""


def weight_vector(meta: BundleMeta, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """The weight of each objective, in the graph's output order: `weights` where given (unnamed objectives then
    weigh 0), else the bundle's default combination (equal weights if it records none)."""
    names = meta.objectives
    chosen = dict(weights) if weights is not None else dict(meta.weights)
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ObjectiveError(f"unknown objective(s) {', '.join(unknown)} (this model has {', '.join(names) or 'one'})")
    bad = [k for k, v in chosen.items() if not (isinstance(v, int | float) and math.isfinite(v))]
    if bad:
        raise ObjectiveError(f"weights must be finite numbers: {', '.join(bad)}")
    if not chosen:
        return np.full(len(names), 1.0 / len(names))
    return np.array([float(chosen.get(n, 0.0)) for n in names])


def combine(
    rewards: np.ndarray,
    meta: BundleMeta,
    weights: Mapping[str, float] | None = None,
    stats: Mapping[str, Mapping[str, float]] | None = None,
) -> np.ndarray:
    """The reward of each text: the rewards themselves for a single-reward bundle, else the weighted sum of the
    heads (each first normalised with `stats[name]` when given), in float64."""
    values = np.asarray(rewards, dtype=np.float64)
    if values.ndim == 1:
        return values
    if stats is not None:
        mean = np.array([stats[n]["mean"] for n in meta.objectives])
        std = np.array([stats[n]["std"] for n in meta.objectives])
        values = (values - mean) / std
    return values @ weight_vector(meta, weights)


def by_objective(rewards: np.ndarray, meta: BundleMeta) -> dict[str, list[float]]:
    """Each head's rewards by objective name ({} for a single-reward bundle)."""
    if np.ndim(rewards) == 1:
        return {}
    return {name: rewards[:, i].astype(np.float64).tolist() for i, name in enumerate(meta.objectives)}
