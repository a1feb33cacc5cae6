"""MicroBatcher: a bounded queue of (pair, future) flushed into length-grouped batches on token budget or max wait.

It knows nothing of ONNX or HTTP: it is given a blocking `run(list[item]) -> scores` and runs it in worker
threads, so the event loop never blocks. Whenever a worker is free, the oldest pending pair runs together with
the pending pairs nearest to it in length, within `max_batch_tokens` / `max_batch_size` / `max_padding`
(padding is most of the waste on CPU), lingering up to `max_wait` for batch mates; results and errors go back
to each waiting future. A pair whose future was cancelled (its client went away) is dropped before it runs.
Admission is one path, `reserve(n)`: room for a request's pairs is taken at the door, all or nothing, and the
`Reservation` gives back whatever it did not queue when its `with` block ends, on every exit path. A request is
refused at once with `Overloaded` when it would wait longer than `max_queue_seconds` (the queued work ahead of it
and its own, at the pace the model is measured to go) or overflow `max_queue` pairs (a memory cap): an overloaded
server answers in milliseconds instead of letting clients time out in its queue.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models.batching import grow_window

from .errors import InferenceFailed, NotReady, Overloaded
from .pace import Pace

log = logging.getLogger("service.batcher")


class HasLength(Protocol):
    """A queued item: its length in tokens is what batching bounds."""

    def __len__(self) -> int: ...


# A pair's result: one reward, or one per objective (an array row) for a multi-objective bundle.
Reward = float | np.ndarray


@dataclass(slots=True)
class _Pending:
    item: Any
    future: asyncio.Future[Reward]
    length: int
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchStats:
    """What one batch cost, reported to the observer (metrics)."""

    size: int
    real_tokens: int
    padded_tokens: int
    seconds: float
    queue_waits: list[float]


class Reservation:
    """Queue room for up to `size` pairs of one request. Use it as a context manager: what it has not queued
    when the block ends (tokenisation failed, the client left, repeats were merged) goes back to the queue."""

    def __init__(self, batcher: MicroBatcher, size: int) -> None:
        self._batcher = batcher
        self.remaining = size

    def shrink(self, n: int) -> None:
        """Give back room for n pairs that will never be queued (e.g. repeats scored once)."""
        n = min(n, self.remaining)
        self.remaining -= n
        self._batcher._unreserve(n)

    def submit(self, items: Sequence[HasLength]) -> list[asyncio.Future[Reward]]:
        """Queue items against this reservation; one future per item."""
        if len(items) > self.remaining:
            raise ValueError(f"{len(items)} items for a reservation of {self.remaining}")
        futures = self._batcher._enqueue(items)
        self.remaining -= len(items)
        return futures

    async def scores(self, items: Sequence[HasLength]) -> list[Reward]:
        """Queue items and await their scores, in order; if any fails or the caller is cancelled, the rest of
        them leave the queue (cancelled) before the error propagates."""
        futures = self.submit(items)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shrink(self.remaining)


def _too_late() -> NotReady:
    """The answer to admitted pairs that the drain's deadline caught before they ran."""
    return NotReady(
        "shutting down: the drain deadline passed before this request ran; retry (another replica may take it)",
        retry_after=1,
    )


class MicroBatcher:
    def __init__(
        self,
        run: Callable[[list[Any]], np.ndarray],
        max_batch_tokens: int,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        workers: int = 1,
        observe: Callable[[BatchStats], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        max_padding: float = 1.0,
        max_queue_seconds: float = 0.0,
    ) -> None:
        self._run = run
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_padding = max_padding
        self.max_queue = max_queue
        self.max_queue_seconds = max_queue_seconds  # 0: admission by the pair bound only
        self.workers = workers
        self.pace = Pace()
        self._observe = observe
        self._on_error = on_error
        self._on_drop = on_drop
        # Two views of the waiting pairs, both keyed by arrival number: in arrival order (the oldest anchors the next
        # batch) and sorted by (length, arrival) (its neighbours in length join it). Taking a batch searches and
        # slices only around that batch (a bisection, then one list memmove per batch), so draining a deep queue
        # costs about the same per pair as a shallow one (bench/queue.py measures the ratio).
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._by_length: list[tuple[int, int]] = []
        self._numbers = itertools.count()
        self._pending_tokens = 0
        self._waiting = 0  # queued pairs whose batch has not started
        self._reserved = 0  # admitted pairs still being tokenised; with _waiting, what the queue bound counts
        self._running_tokens = 0  # padded tokens of the batches running now
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="inference")
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False
        self.refused = 0  # admitted pairs answered 503 because the drain deadline passed before they ran

    @property
    def depth(self) -> int:
        """Pairs admitted whose batch has not started yet (including those still being tokenised)."""
        return self._waiting + self._reserved

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._flush_loop(), name="batcher")

    def expected_wait(self, n: int = 0) -> float:
        """Seconds until the work admitted so far, and n more pairs, would be done at the measured pace (0 before
        any batch was measured): queued and running tokens, plus pairs not yet tokenised at the usual length."""
        pace = self.pace
        if pace.seconds_per_token is None or pace.tokens_per_pair is None:
            return 0.0
        tokens = self._pending_tokens + self._running_tokens + (self._reserved + n) * pace.tokens_per_pair
        return tokens * pace.seconds_per_token / self.workers

    def reserve(self, n: int) -> Reservation:
        """Room for n pairs, taken before they are tokenised, or Overloaded (429) / NotReady (503) at once.

        Admission happens at the door, not after tokenisation, so an overloaded server refuses work before
        spending CPU on it and requests cannot pile up unbounded in front of the queue.
        """
        if self._closed:
            raise NotReady("the server is shutting down", retry_after=1)
        refused = self.refusal(n)
        if refused is not None:
            raise refused
        self._reserved += n
        return Reservation(self, n)

    def refusal(self, n: int) -> Overloaded | None:
        """Why n more pairs cannot be admitted now (None: they can)."""
        depth = self._waiting + self._reserved
        if depth + n > self.max_queue:
            return Overloaded(
                f"queue full ({depth} pairs waiting, limit {self.max_queue}); retry shortly",
                retry_after=max(1, math.ceil(self.expected_wait())),
            )
        wait = self.expected_wait(n)
        if self.max_queue_seconds and depth and wait > self.max_queue_seconds:
            # Honest Retry-After: when enough of the work ahead will be done for this request to fit.
            retry = max(1, math.ceil(wait - self.max_queue_seconds))
            return Overloaded(
                f"{n} more pairs would wait about {wait:.0f} s behind {depth} queued pairs, over the limit of "
                f"{self.max_queue_seconds:g} s (RM_MAX_QUEUE_SECONDS); retry in {retry} s or send fewer pairs",
                retry_after=retry,
            )
        return None

    async def scores(self, items: Sequence[HasLength]) -> list[Reward]:
        """Reserve, queue and await `items` in one call (for callers with nothing to do in between)."""
        with self.reserve(len(items)) as room:
            return await room.scores(items)

    def _unreserve(self, n: int) -> None:
        self._reserved -= n
        self._arrived.set()  # a draining flush loop may be waiting for these pairs

    def _enqueue(self, items: Sequence[HasLength]) -> list[asyncio.Future[Reward]]:
        """Queue reserved items; one future per item, resolved with its score."""
        # While draining, reserved pairs still get queued: the flush loop waits for every reservation.
        if self._closed and (self._loop_task is None or self._loop_task.done()):
            self.refused += len(items)
            raise _too_late()
        self._reserved -= len(items)
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            number = next(self._numbers)
            entry = _Pending(item, loop.create_future(), len(item))
            self._pending[number] = entry
            bisect.insort(self._by_length, (entry.length, number))
            self._pending_tokens += entry.length
            entry.future.add_done_callback(functools.partial(self._forget, number))
            futures.append(entry.future)
        self._waiting += len(items)
        self._arrived.set()
        return futures

    def _full(self) -> bool:
        return len(self._pending) >= self.max_batch_size or self._pending_tokens >= self.max_batch_tokens

    async def _flush_loop(self) -> None:
        """Continuous batching: whenever a worker is free, form the next batch from everything pending.

        Waiting for a free worker *before* choosing means everything that arrived while the model was busy
        competes for the batch, so batches fill up under load without a timer, and a lone request at low load
        runs at once (unless max_wait asks it to linger for batch mates).
        """
        while True:
            if not self._pending:
                self._arrived.clear()
                if self._closed and not self._reserved:
                    return
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            if not self._pending:  # every waiting pair was cancelled while the workers were busy
                self._slots.release()
                continue
            deadline = next(iter(self._pending.values())).enqueued + self.max_wait
            while not self._full() and not self._closed and (remaining := deadline - time.perf_counter()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            entries = self._take_batch()
            if not entries:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run_batch(entries))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _forget(self, number: int, future: asyncio.Future[Reward]) -> None:
        """Done callback: a waiting pair whose future was cancelled (its client went away) leaves the queue."""
        if future.cancelled() and number in self._pending:
            entry = self._pending.pop(number)
            del self._by_length[bisect.bisect_left(self._by_length, (entry.length, number))]
            self._pending_tokens -= entry.length
            self._waiting -= 1
            if self._on_drop:
                self._on_drop(1)

    def _take_batch(self) -> list[_Pending]:
        """Take the oldest pair and its nearest neighbours in length.

        Anchoring on the oldest pair keeps the queue first-come-first-served (nothing starves) while every
        batch is made of pairs of similar length (bounded padding).
        """
        if not self._pending:
            return []
        number, oldest = next(iter(self._pending.items()))
        pos = bisect.bisect_left(self._by_length, (oldest.length, number))
        lo, hi = grow_window(self._by_length, pos, self.max_batch_tokens, self.max_batch_size, self.max_padding)
        taken = self._by_length[lo : hi + 1]
        del self._by_length[lo : hi + 1]
        entries = [self._pending.pop(n) for _, n in taken]
        self._pending_tokens -= sum(e.length for e in entries)
        self._waiting -= len(entries)
        # A future cancelled since its callback was queued: drop it here rather than run it.
        live = [e for e in entries if not e.future.done()]
        if len(live) < len(entries) and self._on_drop:
            self._on_drop(len(entries) - len(live))
        return live

    async def _run_batch(self, entries: list[_Pending]) -> None:
        lengths = [e.length for e in entries]
        padded = len(entries) * max(lengths)
        self._running_tokens += padded
        try:
            started = time.perf_counter()
            waits = [started - e.enqueued for e in entries]
            loop = asyncio.get_running_loop()
            try:
                scores = await loop.run_in_executor(self._pool, self._run, [e.item for e in entries])
                if len(scores) != len(entries):
                    raise RuntimeError(f"runtime returned {len(scores)} scores for {len(entries)} pairs")
            except Exception as exc:  # one bad batch must not stop the queue
                log.exception("batch of %d pairs failed", len(entries))
                if self._on_error:
                    self._on_error(exc)
                error = InferenceFailed(f"inference failed for this batch: {type(exc).__name__}")
                for e in entries:
                    if not e.future.done():
                        e.future.set_exception(error)
                return
            elapsed = time.perf_counter() - started
            for e, score in zip(entries, scores, strict=True):
                if not e.future.done():  # a float, or one per objective (an array row) for multi-objective bundles
                    e.future.set_result(float(score) if np.ndim(score) == 0 else score)
            self.pace.observe(len(entries), padded, sum(lengths), elapsed)
            if self._observe:
                self._observe(BatchStats(len(entries), sum(lengths), padded, elapsed, waits))
        finally:
            self._running_tokens -= padded
            self._slots.release()

    async def close(self, timeout: float | None = None) -> int:
        """Stop taking work and finish every pair already admitted, within `timeout` seconds. Pairs still waiting
        when it passes are answered at once with NotReady (503, Retry-After) instead of being cut off with the
        connection; the batches already running finish. Returns how many admitted pairs were refused so (0: every
        promise was kept)."""
        self._closed = True
        self._arrived.set()
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), timeout)
            except TimeoutError:
                self._loop_task.cancel()
        late = _too_late()
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(late)
                self.refused += 1
        self._pending.clear()
        self._by_length.clear()
        self._pending_tokens = 0
        self._waiting = 0
        if self._inflight:  # running batches cannot be interrupted; they take one batch's time at most
            await asyncio.wait(set(self._inflight), timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        return self.refused
