"""Which pair to show next: `random`, `uncertain` (P(A≻B) nearest 0.5) or `max-gap`, scored by the live service."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from service.client import RewardClient, RewardServiceError

from .store import Connection, Row

log = logging.getLogger("collect.strategies")
STRATEGIES = ("random", "uncertain", "max-gap")
# Measured, not assumed: the simulation over the shared preference sets (docs/collect.md) found no active
# strategy that beats random at any budget, so random is the default.
DEFAULT_STRATEGY = "random"
RETRY_AFTER_FAILURE_S = 30.0  # an unreachable service is not asked again on every page for this long


class ScoresUnavailable(RuntimeError):
    pass


class ModelScores:
    """Completion rewards from the reward service (`/compare`, one call per prompt), cached per model id."""

    def __init__(self, url: str, connect: Callable[[], Connection], api_key: str | None = None) -> None:
        # Short timeout, one retry: an annotator waits on this, and random order is a fine fallback.
        self.client = RewardClient(url, api_key=api_key, timeout=5.0, retries=1)
        self.connect = connect
        self.url = url
        self._model: tuple[str, float] | None = None
        self._failed_at = -math.inf
        self._lock = threading.Lock()

    def model_id(self) -> str:
        """The live model's id, re-read each minute so a hot-reloaded bundle gets fresh scores."""
        now = time.monotonic()
        if self._model is None or now - self._model[1] > 60:
            self._model = (str(self.client.info()["model_id"]), now)
        return self._model[0]

    def for_items(self, rows: Sequence[Row]) -> dict[int, float]:
        """Reward per completion id, for every completion of the prompts of `rows`."""
        if time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE_S:
            raise ScoresUnavailable(f"reward service at {self.url} failed recently")
        conn = self.connect()
        try:
            with self._lock:  # one thread fills the cache at a time; the others then read it
                model = self.model_id()
                prompts = sorted({int(r["prompt_id"]) for r in rows})
                for prompt_id in prompts:
                    self._fill(conn, model, prompt_id)
            marks = ",".join("?" * len(prompts))
            found = conn.execute(
                f"SELECT s.completion_id, s.score FROM scores s JOIN completions c ON c.id = s.completion_id "
                f"WHERE s.model = ? AND c.prompt_id IN ({marks})",
                (model, *prompts),
            ).fetchall()
            return {int(r[0]): float(r[1]) for r in found}
        except httpx.TransportError as e:
            self._failed_at = time.monotonic()
            raise ScoresUnavailable(f"cannot reach the reward service at {self.url}: {e}") from None
        except (RewardServiceError, httpx.HTTPError, KeyError, ValueError) as e:
            self._failed_at = time.monotonic()
            raise ScoresUnavailable(f"reward service at {self.url}: {e}") from None
        finally:
            conn.close()

    def _fill(self, conn: Connection, model: str, prompt_id: int) -> None:
        texts = conn.execute(
            "SELECT c.id, c.text, (SELECT s.score FROM scores s WHERE s.completion_id = c.id AND s.model = ?) AS s "
            "FROM completions c WHERE c.prompt_id = ? ORDER BY c.id",
            (model, prompt_id),
        ).fetchall()
        if all(r["s"] is not None for r in texts):
            return
        prompt = conn.execute("SELECT text FROM prompts WHERE id = ?", (prompt_id,)).fetchone()[0]
        result = self.client.compare(prompt, [r["text"] for r in texts])
        rows = [(r["id"], model, float(s)) for r, s in zip(texts, result["scores"], strict=True)]
        conn.executemany(
            "INSERT INTO scores (completion_id, model, score) VALUES (?, ?, ?) "
            "ON CONFLICT (completion_id, model) DO UPDATE SET score = excluded.score",
            rows,
        )


class Picker:
    """Orders the available items for the queue; model-based strategies rank a random pool of them."""

    def __init__(self, strategy: str, scores: ModelScores | None, pool: int = 32, seed: int | None = None) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
        if strategy != "random" and scores is None:
            raise ValueError(f"strategy {strategy!r} needs --reward-url (the live reward service)")
        self.strategy = strategy
        self.scores = scores
        self.pool = pool
        self.rng = random.Random(seed)
        self.degraded: str | None = None

    def status(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "degraded": self.degraded}

    def __call__(self, rows: Sequence[Row]) -> list[int]:
        ids = [int(r["id"]) for r in rows]
        self.rng.shuffle(ids)
        if self.strategy == "random" or self.scores is None or not rows:
            return ids
        by_id = {int(r["id"]): r for r in rows}
        pool = [by_id[i] for i in ids[: self.pool]]
        try:
            reward = self.scores.for_items(pool)
        except ScoresUnavailable as e:
            if self.degraded is None:
                log.warning("%s: showing pairs in random order until it answers", e)
            self.degraded = str(e)
            return ids
        self.degraded = None
        scored = [r for r in pool if int(r["first_id"]) in reward and int(r["second_id"]) in reward]
        gaps = {int(r["id"]): reward[int(r["first_id"])] - reward[int(r["second_id"])] for r in scored}
        if self.strategy == "uncertain":
            ranked = sorted(gaps, key=lambda i: abs(1 / (1 + math.exp(-gaps[i])) - 0.5))
        else:
            ranked = sorted(gaps, key=lambda i: -abs(gaps[i]))
        return ranked + [i for i in ids if i not in gaps]
