"""MicroBatcher with a plain function as the model: grouping, budgets, order, errors, cancellation, overload."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import numpy as np
import pytest
from builders import pick_batch

from service.core.batcher import BatchStats, MicroBatcher
from service.core.errors import InferenceFailed, Kind, Overloaded


class Item:
    def __init__(self, value: float, length: int) -> None:
        self.value, self.length = value, length

    def __len__(self) -> int:
        return self.length


def run(batches: list[list[Item]], fail_on: float | None = None, delay: float = 0.0):  # type: ignore[no-untyped-def]
    def _run(items: list[Item]) -> np.ndarray:
        if delay:
            time.sleep(delay)
        batches.append(items)
        if fail_on is not None and any(i.value == fail_on for i in items):
            raise RuntimeError("boom")
        return np.array([i.value * 2 for i in items], dtype=np.float32)

    return _run


def test_results_come_back_in_order_across_batches() -> None:
    async def main() -> None:
        seen: list[list[Item]] = []
        stats: list[BatchStats] = []
        b = MicroBatcher(
            run(seen), max_batch_tokens=40, max_batch_size=4, max_wait_ms=5, max_queue=100, observe=stats.append
        )
        b.start()
        items = [Item(i, length=(i * 7) % 13 + 1) for i in range(30)]
        scores = await b.scores(items)
        assert scores == [i * 2 for i in range(30)]
        for batch in seen:
            assert len(batch) <= 4
            assert len(batch) * max(len(i) for i in batch) <= 40 or len(batch) == 1
        # Length grouping: within a flush, batches are sorted by length, so padding stays low.
        assert sum(s.padded_tokens - s.real_tokens for s in stats) < 0.25 * sum(s.padded_tokens for s in stats)
        await b.close()

    asyncio.run(main())


def test_concurrent_requests_share_batches() -> None:
    async def main() -> None:
        seen: list[list[Item]] = []
        b = MicroBatcher(run(seen), max_batch_tokens=10_000, max_batch_size=64, max_wait_ms=200, max_queue=1000)
        b.start()
        results = await asyncio.gather(*(b.scores([Item(i, 5)]) for i in range(20)))
        assert [r[0] for r in results] == [i * 2 for i in range(20)]
        # All 20 arrive within the first pair's 200 ms linger: one batch, in arrival order.
        assert [[i.value for i in batch] for batch in seen] == [list(range(20))]
        await b.close()

    asyncio.run(main())


def test_a_failing_batch_fails_only_its_own_pairs() -> None:
    async def main() -> None:
        seen: list[list[Item]] = []
        b = MicroBatcher(run(seen, fail_on=3.0), max_batch_tokens=100, max_batch_size=1, max_wait_ms=1, max_queue=100)
        b.start()
        futures = b.reserve(6).submit([Item(i, 1) for i in range(6)])
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[3], InferenceFailed)
        assert [r for i, r in enumerate(results) if i != 3] == [0, 2, 4, 8, 10]
        assert await b.scores([Item(7, 1)]) == [14]  # the queue keeps running
        await b.close()

    asyncio.run(main())


def test_overload_is_refused_at_once_and_all_or_nothing() -> None:
    async def main() -> None:
        release = threading.Event()

        def slow(items: list[Item]) -> np.ndarray:
            release.wait(5)
            return np.zeros(len(items), dtype=np.float32)

        b = MicroBatcher(slow, max_batch_tokens=100, max_batch_size=2, max_wait_ms=1, max_queue=4)
        b.start()
        first = b.reserve(4).submit([Item(0, 1)] * 4)
        with pytest.raises(Overloaded) as info:
            b.reserve(3)
        assert info.value.kind is Kind.OVERLOADED and info.value.retry_after  # 429 + Retry-After in every dialect
        release.set()
        await asyncio.gather(*first)
        await b.scores([Item(0, 1)] * 3)  # room again
        await b.close()

    asyncio.run(main())


def test_cancelled_pairs_are_dropped_before_they_run() -> None:
    async def main() -> None:
        seen: list[list[Item]] = []
        dropped: list[int] = []
        b = MicroBatcher(
            run(seen, delay=0.05),
            max_batch_tokens=100,
            max_batch_size=1,
            max_wait_ms=1,
            max_queue=100,
            on_drop=dropped.append,
        )
        keep = b.reserve(1).submit([Item(1, 1)])
        gone = b.reserve(5).submit([Item(100 + i, 1) for i in range(5)])
        for f in gone:
            f.cancel()
        await asyncio.sleep(0)  # the cancelled pairs leave the queue at once, not when a batch is next taken
        assert b.depth == 1 and sum(dropped) == 5  # (no batch can have started: the queue is not running yet)
        b.start()
        assert await asyncio.gather(*keep) == [2]
        await b.close()
        ran = {i.value for batch in seen for i in batch}
        assert ran == {1} and sum(dropped) == 5

    asyncio.run(main())


def test_batches_follow_the_oldest_first_rule_exactly() -> None:
    """The queue keeps its pairs sorted incrementally; its batches are those of re-planning from scratch each time."""
    rng = np.random.default_rng(3)
    lengths = [int(n) for n in rng.integers(1, 120, size=300)]

    async def main() -> list[list[float]]:
        seen: list[list[Item]] = []
        b = MicroBatcher(
            run(seen), max_batch_tokens=400, max_batch_size=8, max_wait_ms=0, max_queue=1000, max_padding=0.1
        )
        b.start()
        await b.scores([Item(i, n) for i, n in enumerate(lengths)])
        await b.close()
        return [sorted(i.value for i in batch) for batch in seen]

    expected, waiting = [], list(range(len(lengths)))
    while waiting:
        chosen = {waiting[j] for j in pick_batch([lengths[i] for i in waiting], 0, 400, 8, 0.1)}
        expected.append(sorted(float(i) for i in chosen))
        waiting = [i for i in waiting if i not in chosen]
    assert asyncio.run(main()) == expected


def test_close_finishes_accepted_work() -> None:
    async def main() -> None:
        seen: list[list[Item]] = []
        b = MicroBatcher(run(seen, delay=0.01), max_batch_tokens=100, max_batch_size=2, max_wait_ms=50, max_queue=100)
        b.start()
        futures = b.reserve(7).submit([Item(i, 1) for i in range(7)])
        await b.close(timeout=10)
        assert [f.result() for f in futures] == [i * 2 for i in range(7)]

    asyncio.run(main())


def test_admission_counts_pairs_still_being_tokenised_and_close_waits_for_them() -> None:
    async def main() -> None:
        seen: list[list[Item]] = []
        b = MicroBatcher(run(seen), max_batch_tokens=100, max_batch_size=8, max_wait_ms=0, max_queue=4)
        b.start()
        room = b.reserve(3)  # a request of 3 pairs is being tokenised
        assert b.depth == 3
        with pytest.raises(Overloaded):
            b.reserve(2)  # would overflow: refused before any work is spent on it
        with pytest.raises(RuntimeError), b.reserve(1):
            raise RuntimeError("tokenisation failed")  # leaving the block, by an error too, gives the room back
        assert b.depth == 3
        closing = asyncio.ensure_future(b.close(timeout=5))
        await asyncio.sleep(0.05)
        assert not closing.done()  # draining waits for the admitted pairs
        with room:
            scores = await room.scores([Item(1, 2), Item(2, 2), Item(3, 2)])
        assert scores == [2, 4, 6]
        await closing
        assert b.depth == 0

    asyncio.run(main())


def test_admission_by_expected_wait_answers_at_once_with_an_honest_retry_after() -> None:
    """A request that would wait past max_queue_seconds at the measured pace is refused at once, saying when it would
    fit; one that fits is queued whole; the pair bound stays as a memory cap."""

    def paced(items: list[Item]) -> np.ndarray:  # 0.5 ms per padded token, as a model's cost grows with its input
        time.sleep(0.0005 * len(items) * max(len(i) for i in items))
        return np.array([i.value for i in items], dtype=np.float32)

    async def main() -> None:
        b = MicroBatcher(paced, max_batch_tokens=10, max_batch_size=1, max_wait_ms=0, max_queue=500)
        b.max_queue_seconds = 1.0
        b.start()
        assert b.expected_wait(100) == 0.0  # nothing measured yet: the pair bound alone decides
        await b.scores([Item(1, 10) for _ in range(4)])
        assert b.pace.seconds_per_token == pytest.approx(0.0005, rel=0.5)
        with b.reserve(300) as room:  # 1.5 s of work, into an empty queue: admitted whole (it fits nowhere better)
            pending = [asyncio.ensure_future(room.scores([Item(2, 10) for _ in range(300)]))]
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            with pytest.raises(Overloaded) as refused:
                b.reserve(10)
            assert time.perf_counter() - started < 0.01  # answered at once, not after a wait
            wait = b.expected_wait(10)
            assert 1.0 < wait < 3.0, wait
            assert refused.value.retry_after == math.ceil(wait - 1.0)
            assert "RM_MAX_QUEUE_SECONDS" in refused.value.message
            [scored] = await asyncio.gather(*pending)
            assert scored == [2.0] * 300
        with b.reserve(10) as room:  # the queue drained: room again
            assert await room.scores([Item(3, 10) for _ in range(10)]) == [3.0] * 10
        with pytest.raises(Overloaded, match="queue full"):
            b.reserve(501)
        await b.close()

    asyncio.run(main())
