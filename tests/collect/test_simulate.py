"""The strategy simulation on tiny synthetic data: the learner, the three strategies, the CLI's table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from collect.active import Pool, fit_head, oriented, run
from collect.simulate import main


def synthetic_pool(n: int, seed: int, dim: int = 8) -> tuple[Pool, Pool]:
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=dim)
    a, b = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    better = ((a - b) @ true_w + rng.normal(scale=0.5, size=n)) > 0  # noisy annotators
    chosen, rejected = np.where(better[:, None], a, b), np.where(better[:, None], b, a)
    pool = oriented(chosen[: n // 2], rejected[: n // 2], rng)
    test = oriented(chosen[n // 2 :], rejected[n // 2 :], rng)
    return pool, test


def test_head_learns_and_every_strategy_runs_deterministically() -> None:
    pool, test = synthetic_pool(1200, 0)
    w = fit_head(pool.d, pool.y, l2=1.0)
    assert np.mean((test.d @ w > 0) == (test.y == 1)) > 0.85
    for name in ("random", "uncertain", "max-gap"):
        accuracy = run(pool, test, name, [20, 80, 320], np.random.default_rng(1), batch=20)
        assert accuracy == run(pool, test, name, [20, 80, 320], np.random.default_rng(1), batch=20)
        assert len(accuracy) == 3 and accuracy[-1] > 0.7, (name, accuracy)
    first = run(pool, test, "random", [20], np.random.default_rng(1), batch=20)
    assert first == run(pool, test, "uncertain", [20], np.random.default_rng(1), batch=20)  # shared cold start
    with pytest.raises(ValueError, match="larger than the pool"):
        run(pool, test, "random", [10_000], np.random.default_rng(0))


def test_cli_writes_table_json_and_plot(tiny_bert: Path, synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "strategies"
    argv = ["--data", str(synthetic_data), "--base", str(tiny_bert), "--budgets", "20", "40", "--seeds", "2"]
    argv += ["--batch", "10", "--max-length", "32", "--cache", str(tmp_path / "f.npz"), "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert set(result["runs"]) == {"random", "uncertain", "max-gap"}
    assert np.array(result["runs"]["uncertain"]).shape == (2, 2) and result["encode_seconds"] > 0
    assert "| uncertain − random (paired) |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert main(argv) == 0  # the second run reads the features from the cache
    assert json.loads(out.with_suffix(".json").read_text())["encode_seconds"] == 0.0
