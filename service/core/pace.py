"""Pace: how fast the live model goes, measured on the batches it ran in the last few seconds (admission by
expected wait divides queued work by it)."""

from __future__ import annotations

import time
from collections import deque


class Pace:
    """How fast the model goes, measured on the batches it ran in the last few seconds: seconds per padded token
    (a batch's cost grows with its padded tokens, whatever its shape) and real tokens per pair.

    Ratios of sums over a window, not an average of per-batch ratios: one batch that waited for a CPU moves the
    estimate by its share of the time, not by its own ratio (single-pair batches on a busy CPU swing 100x)."""

    WINDOW_SECONDS = 5.0

    def __init__(self) -> None:
        self._batches: deque[tuple[float, int, int, int, float]] = deque()  # (done at, pairs, padded, real, seconds)
        self._pairs = self._padded = self._real = 0
        self._seconds = 0.0

    def observe(self, pairs: int, padded_tokens: int, real_tokens: int, seconds: float) -> None:
        if pairs <= 0 or padded_tokens <= 0:
            return
        now = time.monotonic()
        self._batches.append((now, pairs, padded_tokens, real_tokens, seconds))
        self._add(pairs, padded_tokens, real_tokens, seconds)
        while len(self._batches) > 1 and self._batches[0][0] < now - self.WINDOW_SECONDS:
            _, pairs, padded, real, spent = self._batches.popleft()
            self._add(-pairs, -padded, -real, -spent)

    def _add(self, pairs: int, padded: int, real: int, seconds: float) -> None:
        self._pairs += pairs
        self._padded += padded
        self._real += real
        self._seconds += seconds

    @property
    def seconds_per_token(self) -> float | None:
        return max(self._seconds, 0.0) / self._padded if self._padded else None

    @property
    def tokens_per_pair(self) -> float | None:
        return self._real / self._pairs if self._pairs else None
