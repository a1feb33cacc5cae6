"""Reward-drift signals: the window's statistics against a direct computation, its memory bound, threads, and the
gauges and /info of a real app scoring real requests."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats as scipy_stats
from servers import make_client

from models.records import Moments, RewardStats
from service.core.drift import DriftWindow, spearman


def gauges(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, sorted labels) -> value for every sample of a Prometheus text page."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_spearman_matches_scipy_with_ties_and_is_nan_without_order() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 8, 50).astype(float)  # many ties
        y = x * rng.normal(1, 0.5, 50) + rng.normal(0, 2, 50)
        assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))
    assert math.isnan(spearman(np.ones(1), np.ones(1)))


def test_the_window_summarises_the_last_pairs_and_stays_bounded() -> None:
    window = DriftWindow(100)
    stats = RewardStats(Moments(0.0, 2.0))
    window.use_model("m1", stats, ())
    rng = np.random.default_rng(1)
    sent: list[tuple[np.ndarray, np.ndarray, list[str]]] = []
    for _ in range(60):
        n = int(rng.integers(1, 9))
        rewards = rng.normal(1.0, 2.0, n).astype(np.float32)
        cut = rng.random(n) < 0.25
        texts = [f"answer {int(rng.integers(0, 40))}" + "!" * int(rng.integers(0, 30)) for _ in range(n)]
        window.record("m1", rewards, None, cut, texts)
        sent.append((rewards, cut, texts))
        kept = window.summary()["window_pairs"]
        assert kept >= min(100, sum(len(t) for _, _, t in sent)) and kept < 100 + 8  # never more than one request over
    s = window.summary()
    # What the window holds: the newest requests, whole, that make up its pairs.
    newest, count = [], 0
    for entry in reversed(sent):
        if count >= s["window_pairs"]:
            break
        newest.insert(0, entry)
        count += len(entry[2])
    rewards = np.concatenate([r for r, _, _ in newest]).astype(np.float64)
    texts = [t for _, _, ts in newest for t in ts]
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    assert count == s["window_pairs"]
    expected = dict(zip(["0.05", "0.5", "0.95"], np.quantile(rewards, [0.05, 0.5, 0.95]), strict=True))
    assert s["reward_quantiles"] == pytest.approx(expected)
    assert s["reward_shift"] == pytest.approx({q: v / 2.0 for q, v in expected.items()})
    assert s["high_share"] == pytest.approx(np.mean(rewards > 4.0))
    assert s["length_correlation"] == pytest.approx(scipy_stats.spearmanr(rewards, lengths).statistic)
    assert s["truncated_share"] == pytest.approx(np.concatenate([c for _, c, _ in newest]).mean())
    assert s["duplicate_share"] == pytest.approx(1 - len(set(texts)) / len(texts))
    assert s["completion_chars"]["0.5"] == pytest.approx(np.median(lengths))
    assert window.summary() is s  # nothing recorded since: not recomputed

    window.use_model("m2", None, ())  # another model: another scale, a new window; no statistics, no shift
    assert window.summary() == {"window_pairs": 0}
    window.record("m1", np.ones(3, np.float32), None, np.zeros(3, bool), ["late", "from", "m1"])  # in flight
    window.record("m2", np.ones(2, np.float32), None, np.zeros(2, bool), ["a", "a"])
    s = window.summary()
    assert s["window_pairs"] == 2 and s["duplicate_share"] == 0.5 and "reward_shift" not in s
    assert math.isnan(s["length_correlation"]) and window.info()["length_correlation"] is None


def test_objectives_components_and_the_gauges() -> None:
    window = DriftWindow(50)
    stats = RewardStats(Moments(0.0, 1.0), (("helpful", Moments(1.0, 2.0)), ("harmless", Moments(-1.0, 0.5))))
    window.use_model("two", stats, ("helpful", "harmless"))
    heads = np.array([[1.0, -1.0], [3.0, -0.5], [5.0, 0.0]], dtype=np.float32)
    window.record("two", heads.mean(axis=1), heads, np.array([False, True, False]), ["x", "yy", "zzz"])
    window.record_components({"model": [1.0, 2.0, 3.0], "math": [1.0, None, 0.0]})
    registry = CollectorRegistry()
    registry.register(window)
    page = gauges(generate_latest(registry).decode())
    assert page[("rm_drift_window_pairs", ())] == 3
    assert page[("rm_drift_objective_reward", (("objective", "helpful"), ("quantile", "0.5")))] == 3.0
    assert page[("rm_drift_objective_shift", (("objective", "harmless"), ("quantile", "0.5")))] == pytest.approx(
        (-0.5 + 1.0) / 0.5
    )
    assert page[("rm_drift_component_mean", (("component", "math"),))] == 0.5  # the sample without a value left out
    assert page[("rm_drift_truncated_share", ())] == pytest.approx(1 / 3)
    assert page[("rm_drift_length_correlation", ())] == pytest.approx(1.0)
    empty = CollectorRegistry()
    empty.register(DriftWindow(0))  # off: no gauges at all
    assert "rm_drift" not in generate_latest(empty).decode()


def test_recording_and_scraping_from_many_threads() -> None:
    window = DriftWindow(1000)
    window.use_model("m", RewardStats(Moments(0.0, 1.0)), ())
    errors: list[BaseException] = []

    def record(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for i in range(2000):
                n = int(rng.integers(1, 5))
                window.record("m", rng.normal(size=n), None, np.zeros(n, bool), [f"{seed}-{i}-{k}" for k in range(n)])
        except BaseException as e:
            errors.append(e)

    def scrape() -> None:
        try:
            for _ in range(200):
                s = window.summary()
                assert s["window_pairs"] <= 1000 + 4
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=record, args=(k,)) for k in range(4)] + [threading.Thread(target=scrape)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = window.summary()
    assert 1000 <= s["window_pairs"] <= 1000 + 4 and s["duplicate_share"] == 0


def test_a_real_app_shows_the_signals_on_metrics_and_info(tiny_bundle: Path) -> None:
    prompts = ["Question 1: tell me about tea.", "Question 2: tell me about maps."]
    answers = ["tea is kind.", "tea is kind.", "maps is rude and " + "very " * 200 + "rude.", "maps are fine."]
    with make_client(tiny_bundle, precision="fp32", drift_window=64) as c:
        before = gauges(c.get("/metrics").text)
        assert before[("rm_drift_window_pairs", ())] == 0 and before[("rm_ready", ())] == 1
        assert 0 < before[("rm_reference_limit", ())] < math.inf
        items = [{"prompt": prompts[i % 2], "completion": a} for i, a in enumerate(answers)]
        scored = c.post("/score", json={"items": items}).json()
        three = [*answers[:2], "tea is nice."]
        compared = c.post("/compare", json={"prompt": prompts[0], "completions": three}).json()
        page = gauges(c.get("/metrics").text)
        info = c.get("/info").json()["drift"]
    rewards = np.array(scored["scores"] + compared["scores"], dtype=np.float64)
    assert page[("rm_drift_window_pairs", ())] == info["window_pairs"] == 7 and info["window_size"] == 64
    median = page[("rm_drift_reward", (("quantile", "0.5"),))]
    assert median == pytest.approx(float(np.median(rewards)), abs=1e-6) and info["reward_quantiles"]["0.5"] == median
    assert page[("rm_drift_truncated_share", ())] == pytest.approx(1 / 7)  # the long answer, cut to 64 tokens
    assert page[("rm_drift_duplicate_share", ())] == pytest.approx(1 - 4 / 7)  # "tea is kind." four times
    assert ("rm_drift_reward_shift", (("quantile", "0.95"),)) in page  # the bundle records its statistics
