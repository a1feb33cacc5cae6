"""open_scorer, LoadedModel and Pipeline: limits -> tokenise, deduplicate -> batch queue -> ONNX -> gather in order.

Every endpoint scores through `Pipeline.score`; it is testable without HTTP. A request keeps the LoadedModel it
started with, so a reload that swaps `Pipeline.model` never mixes two models inside one response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from models.bundle import Bundle, BundleError, read_bundle
from models.formatting import Encoded, Text, dedupe
from models.reference import ReferenceCheck, check_reference
from models.runtime import CPU, BundleScorer

from .batcher import BatchStats, MicroBatcher
from .errors import NotReady, TooLarge
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("service.scorer")


def _small(texts: Sequence[Text], limit: int) -> bool:
    """Plain strings of at most `limit` characters in all (message lists always go to the tokeniser threads)."""
    total = 0
    for t in texts:
        if not isinstance(t, str):
            return False
        total += len(t)
    return total <= limit


@dataclass(frozen=True)
class ScoreResult:
    raw: np.ndarray  # float32 rewards in request order
    truncated: int
    model: LoadedModel

    def values(self, normalize: bool) -> list[float]:
        if not normalize:
            return self.raw.tolist()
        mean, std = self.model.normalizer
        return ((self.raw.astype(np.float64) - mean) / std).tolist()


def _encode(
    model: LoadedModel, prompts: Sequence[Text], completions: Sequence[Text]
) -> tuple[list[Encoded], list[int]]:
    """Tokenise, then keep one copy of each distinct model input: GRPO groups and best-of-n samples often repeat a
    completion, and scoring is batch-invariant, so a repeat gets the very same reward without running again."""
    return dedupe(model.scorer.encode(prompts, completions))


def open_scorer(bundle: Bundle, settings: Settings) -> tuple[BundleScorer, ReferenceCheck | None]:
    """The bundle's ONNX session for the configured precision, with its reference probes re-scored.

    A bundle whose probes tokenise or score differently here than at export is refused (BundleError) under
    RM_REFERENCE_CHECK=strict and logged under warn. fp16, the default on a GPU when the bundle has it, gives way
    to fp32 when it misses the reference on this device.
    """

    def session(precision: str | None) -> BundleScorer:
        return BundleScorer(
            bundle,
            precision,
            settings.device,
            settings.intra_op_threads,
            settings.inter_op_threads,
            spin=settings.ort_spinning,
        )

    scorer = session(settings.precision)
    if settings.reference_check == "off":
        return scorer, None
    std = bundle.meta.normalizer("fp32")[1]
    check = check_reference(scorer, bundle.meta.reference, std, settings.reference_tolerance)
    fallback = settings.precision is None and scorer.precision == "fp16"  # fp16 was our choice, not the user's
    if fallback and check is not None and check.tokens_match and not check.ok:
        log.warning("%s: %s; serving fp32 instead", bundle.path, check.problem())
        scorer = session("fp32")
        check = check_reference(scorer, bundle.meta.reference, std, settings.reference_tolerance)
    if check is None or check.ok:
        return scorer, check
    if settings.reference_check == "strict":
        raise BundleError(f"{bundle.path}: {check.problem()} (RM_REFERENCE_CHECK=warn serves it anyway)")
    log.warning("%s: %s (served anyway: RM_REFERENCE_CHECK=warn)", bundle.path, check.problem())
    return scorer, check


class LoadedModel:
    """One bundle, its ONNX session and its own batch queue."""

    def __init__(self, bundle: Bundle, settings: Settings, metrics: Metrics) -> None:
        self.bundle = bundle
        self.scorer, self.reference = open_scorer(bundle, settings)
        self.precision = self.scorer.precision
        self.provider = self.scorer.provider
        limits = settings.batch_limits(self.provider != CPU)
        self.max_batch_tokens, self.max_batch_size, self.max_wait_ms, self.max_padding = limits
        self.normalizer = bundle.meta.normalizer(self.precision)
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
        )

    @property
    def model_id(self) -> str:
        return self.bundle.meta.model_id

    @classmethod
    async def load(cls, model_dir: str, settings: Settings, metrics: Metrics) -> LoadedModel:
        """Read, validate and open a bundle (in a thread: hashing and session creation take a while)."""
        bundle = await asyncio.to_thread(read_bundle, model_dir)
        model = await asyncio.to_thread(cls, bundle, settings, metrics)
        model.batcher.start()
        return model

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
        await asyncio.gather(*self.batcher.submit_many(encoded))

    async def close(self, timeout: float | None) -> None:
        await self.batcher.close(timeout)


class Pipeline:
    """The live model and the path every scoring request takes through it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model: LoadedModel | None = None
        self._tokenizer_pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenize")
        self._load_lock = asyncio.Lock()
        metrics.queue_depth.set_function(lambda: self.model.batcher.depth if self.model else 0)
        self._retiring: set[asyncio.Task[None]] = set()

    def check_limits(self, texts: Sequence[tuple[str, Text]], items: int) -> None:
        """413 for too many pairs or an over-long text, naming the field."""
        limit = self.settings.max_items_per_request
        if items > limit:
            raise TooLarge(f"{items} items in one request; the limit is {limit} (split the request)")
        max_chars = self.settings.max_chars_per_text
        for name, text in texts:
            size = len(text) if isinstance(text, str) else sum(len(str(m["content"])) for m in text)
            if size > max_chars:
                raise TooLarge(f"{name}: {size} characters; the limit is {max_chars}", field=name)

    async def score(self, prompts: Sequence[Text], completions: Sequence[Text]) -> ScoreResult:
        model = self.model
        if model is None:
            raise NotReady("no model loaded yet")
        model.batcher.admit(len(prompts))  # 429 before spending any CPU on an overloaded server
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            if _small([*prompts, *completions], self.settings.inline_tokenize_chars):
                encoded, index = _encode(model, prompts, completions)  # skips a thread hop; see Settings
            else:
                encoded, index = await loop.run_in_executor(self._tokenizer_pool, _encode, model, prompts, completions)
        except BaseException:
            model.batcher.release(len(prompts))
            raise
        self.metrics.tokenize_latency.observe(time.perf_counter() - started)
        repeats = len(index) - len(encoded)
        if repeats:
            model.batcher.release(repeats)
            self.metrics.repeats.inc(repeats)
        futures = model.batcher.submit_many(encoded, admitted=True)
        try:
            scores = await asyncio.gather(*futures)
        except BaseException:
            for f in futures:
                f.cancel()  # the client left or a batch failed: drop this request's pairs still queued
            raise
        raw = np.asarray(scores, dtype=np.float32)[index]
        truncated = sum(encoded[i].truncated for i in index)
        self.metrics.pairs.inc(len(raw))
        if truncated:
            self.metrics.truncated.inc(truncated)
        for value in raw.tolist():
            self.metrics.scores.observe(value)
        return ScoreResult(raw, truncated, model)

    async def load(self, model_dir: str) -> LoadedModel:
        """Load, validate and warm a bundle beside the live one, then swap it in atomically.

        Requests already holding the old model finish on it while it drains in the background. A bundle that
        fails to load or warm up raises, and the old model keeps serving.
        """
        async with self._load_lock:
            new = await LoadedModel.load(model_dir, self.settings, self.metrics)
            try:
                if self.settings.warmup:
                    await new.warm_up()
            except BaseException:
                await new.close(0)
                raise
            old, self.model = self.model, new
            self.metrics.set_model(new.model_id, new.bundle.meta.base_model, new.precision, new.provider)
            self.metrics.reference_diff.set(new.reference.max_abs_diff if new.reference else float("nan"))
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close(self.settings.drain_seconds))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("now serving %s; %s drains in the background", new.model_id, old.model_id)
        return new

    async def close(self) -> None:
        """Finish every accepted pair (live and retiring models), then release the threads."""
        timeout = self.settings.drain_seconds
        if self.model is not None:
            await self.model.close(timeout)
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=timeout)
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
