"""Pool-based active learning of a Bradley–Terry linear head on fixed features: the simulation's learner and loop.

A pair is the difference of its two texts' features, d = f(A) − f(B); the head models P(A≻B) = σ(w·d). No bias:
swapping the sides flips d and the probability, as Bradley–Terry requires. Strategies pick the next batch of
unlabelled pool pairs under the head fitted on the labels so far:
  random     uniformly at random
  uncertain  the pairs whose P(A≻B) is nearest 0.5 (smallest |w·d|)
  max-gap    the pairs whose predicted rewards differ most (largest |w·d| = |r(A) − r(B)|): the pairs the model
             is most sure about, so a human label there mostly confirms it or catches a confident mistake
The first batch is random for every strategy (a cold start has no head to ask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("random", "uncertain", "max-gap")


def fit_head(d: np.ndarray, y: np.ndarray, l2: float, w0: np.ndarray | None = None, steps: int = 25) -> np.ndarray:
    """L2-regularised logistic regression without bias, by Newton's method (features are a few hundred wide, so the
    Hessian solve is cheap and a warm start from the previous round converges in a few steps)."""
    w = np.zeros(d.shape[1]) if w0 is None else w0.copy()
    sign = 2.0 * y - 1.0
    for _ in range(steps):
        z = sign * (d @ w)
        p = 1.0 / (1.0 + np.exp(np.clip(z, -30, 30)))  # σ(−z): the weight of each pair's gradient
        grad = -(d.T @ (sign * p)) + l2 * w
        hess = (d.T * (p * (1 - p))) @ d + l2 * np.eye(d.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-5:
            break
    return w


@dataclass(frozen=True)
class Pool:
    """Unlabelled pairs (a feature difference each) with the oracle's answer: 1 when A is preferred."""

    d: np.ndarray
    y: np.ndarray


def oriented(chosen: np.ndarray, rejected: np.ndarray, rng: np.random.Generator) -> Pool:
    """Show each pair with random sides, as the annotation app does, so the label is not always 1."""
    flip = rng.random(len(chosen)) < 0.5
    d = np.where(flip[:, None], rejected - chosen, chosen - rejected)
    return Pool(d, (~flip).astype(float))


def run(
    pool: Pool,
    test: Pool,
    strategy: str,
    budgets: Sequence[int],
    rng: np.random.Generator,
    batch: int = 50,
    l2: float = 1.0,
) -> list[float]:
    """Held-out accuracy of the head after each budget's worth of oracle labels, acquired in batches."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    if max(budgets) > len(pool.y):
        raise ValueError(f"budget {max(budgets)} is larger than the pool ({len(pool.y)} pairs)")
    labelled = np.zeros(len(pool.y), dtype=bool)
    labelled[rng.choice(len(pool.y), size=min(batch, min(budgets)), replace=False)] = True
    w: np.ndarray | None = None
    accuracy = []
    for budget in sorted(budgets):
        while True:
            idx = np.flatnonzero(labelled)
            w = fit_head(pool.d[idx], pool.y[idx], l2, w)
            if len(idx) >= budget:
                break
            free = np.flatnonzero(~labelled)
            take = min(batch, budget - len(idx))
            if strategy == "random":
                picked = rng.choice(free, size=take, replace=False)
            else:
                margin = np.abs(pool.d[free] @ w) + rng.random(len(free)) * 1e-12  # random among exact ties
                order = np.argsort(margin if strategy == "uncertain" else -margin)
                picked = free[order[:take]]
            labelled[picked] = True
        accuracy.append(float(np.mean((test.d @ w > 0) == (test.y == 1))))
    return accuracy
