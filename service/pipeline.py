"""Pipeline: the path every scoring request takes — limits -> tokenise, deduplicate -> batch queue -> ONNX -> gather.

Every endpoint scores through `Pipeline.score`; it is testable without HTTP (tests/service/test_pipeline.py). A
request keeps the ServedModel it started with, so a reload that swaps `Pipeline.model` never mixes two models
inside one response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.bundle import Bundle, BundleError, read_bundle
from models.formatting import Encoded, Text, dedupe
from models.objectives import ObjectiveError, by_objective, combine, weight_vector
from models.runtime import CPU
from models.serving import Served, open_served

from .batcher import BatchStats, MicroBatcher
from .errors import InvalidInput, NotReady, TooLarge
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("service.pipeline")


class ScoringRequest(Protocol):
    """What a request schema gives the pipeline: its texts with their field names (for limits and error
    messages), and the (prompt, completion) pairs to score."""

    def texts(self) -> list[tuple[str, Text]]: ...

    def pairs(self) -> tuple[list[Text], list[Text]]: ...


def open_bundle(model_dir: str, settings: Settings) -> Served:
    """Read and verify a bundle and open it as the settings say (precision, device, threads, reference check)."""
    bundle = read_bundle(model_dir)
    return open_served(
        bundle,
        settings.precision,
        settings.device,
        settings.intra_op_threads,
        settings.inter_op_threads,
        spin=settings.ort_spinning,
        check=settings.reference_check,
        tolerance=settings.reference_tolerance,
    )


@dataclass(frozen=True)
class ScoreResult:
    heads: np.ndarray  # float32 rewards in request order: (n,), or (n, k) for a bundle with k objectives
    truncated_mask: np.ndarray  # bool per pair: cut to the model's max length
    model: ServedModel
    tokens: int = 0  # model input tokens of all pairs, a repeat counted each time (vLLM's usage.prompt_tokens)

    @property
    def raw(self) -> np.ndarray:
        """The reward of each pair: a multi-objective bundle's heads combined with its default weights."""
        if self.heads.ndim == 1:
            return self.heads
        return np.asarray(combine(self.heads, self.model.bundle.meta), dtype=np.float32)

    @property
    def truncated(self) -> int:
        return int(self.truncated_mask.sum())

    def values(self, normalize: bool | None, weights: Mapping[str, float] | None = None) -> list[float]:
        """The rewards: normalised with the bundle's statistics when `normalize` (None: RM_NORMALIZE), each head by
        its own before a multi-objective bundle combines them with `weights` (None: its default)."""
        meta = self.model.bundle.meta
        try:
            if weights:
                weight_vector(meta, weights)  # names this model's objectives, or a clear 422 (one reward: none)
            if not (self.model.normalize_default if normalize is None else normalize):
                return combine(self.heads, meta, weights).tolist() if weights else self.raw.tolist()
            stats = meta.reward_stats.get(self.model.precision) or meta.reward_stats.get("fp32")
            if not stats:
                raise InvalidInput(
                    "normalize: this bundle records no reward statistics (exported without evaluation data); "
                    "ask for raw rewards or re-export it with --eval-data",
                    field="normalize",
                )
            if self.heads.ndim == 2:
                return combine(self.heads, meta, weights, stats["objectives"]).tolist()
            return ((self.heads.astype(np.float64) - stats["mean"]) / stats["std"]).tolist()
        except ObjectiveError as e:
            raise InvalidInput(f"weights: {e}", field="weights") from None

    def objectives(self) -> dict[str, list[float]]:
        """Each objective's raw rewards by name ({} for a single-reward bundle)."""
        return by_objective(self.heads, self.model.bundle.meta)


def _inline(texts: Sequence[Text], limit: int) -> bool:
    """Plain strings of at most `limit` characters in all: cheap enough to tokenise on the event loop (message lists
    always go to the tokeniser threads)."""
    total = 0
    for t in texts:
        if not isinstance(t, str):
            return False
        total += len(t)
    return total <= limit


class ServedModel:
    """One opened bundle and its own batch queue."""

    def __init__(self, served: Served, settings: Settings, metrics: Metrics) -> None:
        self.scorer = served.scorer
        self.reference = served.check
        self.precision_reason = served.reason
        self.bundle: Bundle = self.scorer.bundle
        self.precision = self.scorer.precision
        self.provider = self.scorer.provider
        limits = settings.batch_limits(self.provider != CPU)
        self.max_batch_tokens, self.max_batch_size, self.max_wait_ms, self.max_padding = limits
        self.normalizer = self.bundle.meta.normalizer(self.precision)
        self.normalize_default = settings.normalize
        if settings.normalize and self.normalizer is None:
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
        )

    @property
    def model_id(self) -> str:
        return self.bundle.meta.model_id

    def encode(self, prompts: Sequence[Text], completions: Sequence[Text]) -> tuple[list[Encoded], list[int]]:
        """Tokenise, then keep one copy of each distinct model input: GRPO groups and best-of-n samples often repeat
        a completion, and scoring is batch-invariant, so a repeat gets the very same reward without running again."""
        return dedupe(self.scorer.encode(prompts, completions))

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

    async def close(self, timeout: float | None) -> None:
        await self.batcher.close(timeout)


class Pipeline:
    """The live model and the path every scoring request takes through it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model: ServedModel | None = None
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
            size = len(text) if isinstance(text, str) else sum(len(str(m.get("content") or "")) for m in text)
            if size > max_chars:
                raise TooLarge(f"{name}: {size} characters; the limit is {max_chars}", field=name)

    async def score(self, request: ScoringRequest) -> ScoreResult:
        """Check the request's limits, then score its pairs on the live model."""
        prompts, completions = request.pairs()
        self.check_limits(request.texts(), len(prompts))
        return await self.score_pairs(prompts, completions)

    async def score_pairs(self, prompts: Sequence[Text], completions: Sequence[Text]) -> ScoreResult:
        model = self.model
        if model is None:
            raise NotReady("no model loaded yet")
        if not prompts:
            return ScoreResult(np.zeros((0, *model.scorer.shape), dtype=np.float32), np.zeros(0, dtype=bool), model)
        with model.batcher.reserve(len(prompts)) as room:  # 429 before spending any CPU on an overloaded server
            started = time.perf_counter()
            if _inline([*prompts, *completions], self.settings.inline_tokenize_chars):
                encoded, index = model.encode(prompts, completions)  # skips a thread hop; see Settings
            else:
                loop = asyncio.get_running_loop()
                encoded, index = await loop.run_in_executor(self._tokenizer_pool, model.encode, prompts, completions)
            self.metrics.tokenize_latency.observe(time.perf_counter() - started)
            repeats = len(index) - len(encoded)
            if repeats:
                room.shrink(repeats)
                self.metrics.repeats.inc(repeats)
            scores = await room.scores(encoded)
        heads = np.asarray(scores, dtype=np.float32)[index]
        truncated = np.array([encoded[i].truncated for i in index], dtype=bool)
        tokens = sum(len(encoded[i]) for i in index)
        result = ScoreResult(heads, truncated, model, tokens)
        self.metrics.pairs.inc(len(heads))
        if truncated.any():
            self.metrics.truncated.inc(int(truncated.sum()))
        for value in result.raw.tolist():
            self.metrics.scores.observe(value)
        return result

    async def load(self, model_dir: str, opened: Served | None = None) -> ServedModel:
        """Open (unless `opened` already is), validate and warm a bundle beside the live one, then swap it in.

        Requests already holding the old model finish on it while it drains in the background. A bundle that
        fails to load or warm up raises, and the old model keeps serving.
        """
        async with self._load_lock:
            served = opened if opened is not None else await asyncio.to_thread(open_bundle, model_dir, self.settings)
            new = ServedModel(served, self.settings, self.metrics)
            new.batcher.start()
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
