"""The served model: a bundle opened with its own batch queue (LiveModel), and the slot that holds the live one —
open and warm a bundle beside it, swap, retire the old one once its queue is empty, drain at shutdown (as vLLM's
OpenAIServingModels holds models apart from the endpoints that use them)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging

from models.bundle import Bundle, BundleError, read_bundle
from models.runtime import CPU
from models.serving import CheckedScorer, open_checked

from .batcher import BatchStats, MicroBatcher
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("service.models")


def open_bundle(model_dir: str, settings: Settings) -> CheckedScorer:
    """Read and verify a bundle and open it as the settings say (precision, device, threads, reference check)."""
    bundle = read_bundle(model_dir)
    return open_checked(
        bundle,
        settings.precision,
        settings.device,
        settings.intra_op_threads,
        settings.inter_op_threads,
        spin=settings.ort_spinning,
        check=settings.reference_check,
        tolerance=settings.reference_tolerance,
    )


def _return_freed_memory() -> None:
    """Collect what a released model left behind, then hand glibc's freed heap back to the OS (it keeps freed
    arenas mapped otherwise, so RSS would stay at its peak after a reload)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class LiveModel:
    """One opened bundle and its own batch queue."""

    def __init__(self, opened: CheckedScorer, settings: Settings, metrics: Metrics) -> None:
        self.scorer = opened.scorer
        self.reference = opened.check
        self.precision_reason = opened.reason
        self.bundle: Bundle = self.scorer.bundle
        self.precision = self.scorer.precision
        self.provider = self.scorer.provider
        limits = settings.batch_limits(self.provider != CPU)
        self.max_batch_tokens, self.max_batch_size, self.max_wait_ms, self.max_padding = limits
        self.stats = self.bundle.meta.stats_for(self.precision)
        self.normalize_default = settings.normalize
        if settings.normalize and self.stats is None:
            raise BundleError(
                f"{self.bundle.path}: RM_NORMALIZE is on but the bundle records no reward statistics "
                "(re-export it with --eval-data, or turn RM_NORMALIZE off)"
            )
        self._metrics = metrics
        self.batcher = MicroBatcher(
            self.scorer.run,
            self.max_batch_tokens,
            self.max_batch_size,
            self.max_wait_ms,
            settings.max_queue_pairs,
            settings.inference_workers,
            observe=self._observe,
            on_error=lambda exc: metrics.batch_errors.inc(),
            on_drop=metrics.dropped.inc,
            max_padding=self.max_padding,
            max_queue_seconds=settings.max_queue_seconds,
        )

    @property
    def model_id(self) -> str:
        return self.bundle.meta.model_id

    def _observe(self, stats: BatchStats) -> None:
        m = self._metrics
        m.batch_size.observe(stats.size)
        m.batch_tokens.observe(stats.padded_tokens)
        m.padding_fraction.observe(1 - stats.real_tokens / stats.padded_tokens)
        m.tokens.labels("real").inc(stats.real_tokens)
        m.tokens.labels("padding").inc(stats.padded_tokens - stats.real_tokens)
        m.inference_latency.observe(stats.seconds)
        for wait in stats.queue_waits:
            m.queue_wait.observe(wait)

    async def warm_up(self) -> None:
        """A short and a full-length inference through this model's own queue, before it takes traffic."""
        long_text = "warm up " * self.bundle.meta.formatting.max_length
        encoded = await asyncio.to_thread(self.scorer.encode, ["Is this a warm-up?", long_text], ["Yes.", long_text])
        await self.batcher.scores(encoded)

    async def close(self, timeout: float | None) -> int:
        """Finish (or, past `timeout`, refuse) the admitted work, then release the ONNX Runtime session, its memory
        and threads, now: a retired model must not wait for a garbage collection that may never come. Returns the
        admitted pairs refused at the deadline."""
        refused = await self.batcher.close(timeout)
        self.scorer.close()
        return refused


class ModelSlot:
    """Holds the live model: loads and swaps bundles (one at a time), retires old ones, drains at shutdown. A request
    keeps the LiveModel it started with, so a swap never mixes two models inside one answer."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.live: LiveModel | None = None
        self._load_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Future[int] | None = None
        self.refused = 0  # admitted pairs answered 503 at the drain deadline (the process then exits non-zero)

    async def load(self, model_dir: str, opened: CheckedScorer | None = None) -> LiveModel:
        """Open (unless `opened` already is), validate and warm a bundle beside the live one, then swap it in.

        Requests already holding the old model finish on it while it drains in the background. A bundle that
        fails to load or warm up raises, and the old model keeps serving.
        """
        async with self._load_lock:
            opened = opened if opened is not None else await asyncio.to_thread(open_bundle, model_dir, self.settings)
            new = LiveModel(opened, self.settings, self.metrics)
            new.batcher.start()
            try:
                if self.settings.warmup:
                    await new.warm_up()
            except BaseException:
                await new.close(0)
                raise
            old, self.live = self.live, new
            self.metrics.set_model(new.model_id, new.bundle.meta.base_model, new.precision, new.provider)
            self.metrics.reference_diff.set(new.reference.max_abs_diff if new.reference else float("nan"))
            self.metrics.reference_limit.set(new.reference.limit if new.reference else float("nan"))
            self.metrics.drift.use_model(new.model_id, new.stats, new.bundle.meta.objectives)
        if old is not None:
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("now serving %s; %s drains in the background", new.model_id, old.model_id)
        return new

    async def _retire(self, old: LiveModel) -> None:
        await old.close(self.settings.drain_timeout)
        await asyncio.to_thread(_return_freed_memory)

    async def close(self) -> int:
        """Finish every accepted pair (live and retiring models) within RM_DRAIN_SECONDS and answer what is still
        queued then with 503 + Retry-After. Returns the admitted pairs refused at the deadline.

        Called at SIGTERM, so the deadline falls before the server's own backstop cuts connections; later calls
        (the lifespan's end) wait for the same drain."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        return await asyncio.shield(self._closing)

    async def _close(self) -> int:
        timeout = self.settings.drain_timeout
        refused = await self.live.close(timeout) if self.live is not None else 0
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=timeout)
        if refused:
            log.error("the drain deadline (%g s) passed: %d admitted pairs were answered 503", timeout, refused)
        self.refused = refused
        return refused
