"""Pipeline: the path every scoring request takes — limits -> tokenise, deduplicate -> batch queue -> ONNX -> gather.

Every endpoint scores through `Pipeline.score`; it is testable without HTTP (tests/service/test_pipeline.py). A
request keeps the ServedModel it started with, so a reload that swaps `Pipeline.model` never mixes two models
inside one response.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.bundle import Bundle, BundleError, read_bundle
from models.formatting import Encoded, dedupe
from models.messages import FormatError, Text
from models.objectives import ObjectiveError, by_objective, combine, weight_vector
from models.runtime import CPU
from models.serving import Served, open_served

from .batcher import BatchStats, MicroBatcher
from .errors import InferenceFailed, InvalidInput, NotReady, Overloaded, TooLarge
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("service.pipeline")


class ScoringRequest(Protocol):
    """What a request schema gives the pipeline: its texts with their field names (for limits and error
    messages), the (prompt, completion) pairs to score, and where in the body pair i came from."""

    def texts(self) -> list[tuple[str, Text]]: ...

    def pairs(self) -> tuple[list[Text], list[Text]]: ...

    def pair_field(self, i: int) -> str: ...


# A protocol's way out when the model's chat template refuses a pair: rewrites of (prompt, completion), boldest last,
# each named for the metrics. /get_reward has one (a legitimate rollout never gets a 4xx); the others answer 4xx.
Repair = Callable[[Text, Text], Iterable[tuple[str, Text, Text]]]


def refusal(error: FormatError, field: str, prompt: Text) -> InvalidInput:
    """A pair the model cannot format, as a 4xx naming the pair and, for a refused conversation, the message."""
    where = field
    if error.message is not None:
        n_prompt = 1 if isinstance(prompt, str) else len(prompt)
        side, k = ("prompt", error.message) if error.message < n_prompt else ("completion", error.message - n_prompt)
        where = f"{field} ({side} message {k}, role {error.role!r})"
    return InvalidInput(f"{where}: {error.reason}", field=field)


def _return_freed_memory() -> None:
    """Collect what a released model left behind, then hand glibc's freed heap back to the OS (it keeps freed
    arenas mapped otherwise, so RSS would stay at its peak after a reload)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
    repairs: tuple[str, ...] = field(default=())  # per pair: the Repair that made it scorable, or "none"

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
                return _finite(combine(self.heads, meta, weights)) if weights else self.raw.tolist()
            stats = meta.reward_stats.get(self.model.precision) or meta.reward_stats.get("fp32")
            if not stats:
                raise InvalidInput(
                    "normalize: this bundle records no reward statistics (exported without evaluation data); "
                    "ask for raw rewards or re-export it with --eval-data",
                    field="normalize",
                )
            if self.heads.ndim == 2:
                return _finite(combine(self.heads, meta, weights, stats["objectives"]))
            return _finite((self.heads.astype(np.float64) - stats["mean"]) / stats["std"])
        except ObjectiveError as e:
            raise InvalidInput(f"weights: {e}", field="weights") from None

    def objectives(self) -> dict[str, list[float]]:
        """Each objective's raw rewards by name ({} for a single-reward bundle)."""
        return by_objective(self.heads, self.model.bundle.meta)


def _finite(rewards: np.ndarray) -> list[float]:
    """The rewards as JSON numbers, or a 422: weights (or statistics) can push a finite reward past float range."""
    if not np.all(np.isfinite(rewards)):
        raise InvalidInput(
            "weights: the weighted reward is not a finite number (weights too large for these rewards)", field="weights"
        )
    values: list[float] = rewards.tolist()
    return values


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
            max_queue_seconds=settings.max_queue_seconds,
        )

    @property
    def model_id(self) -> str:
        return self.bundle.meta.model_id

    def encode(
        self,
        prompts: Sequence[Text],
        completions: Sequence[Text],
        field_of: Callable[[int], str],
        repair: Repair | None,
    ) -> tuple[list[Encoded], list[int], tuple[str, ...]]:
        """Tokenise, then keep one copy of each distinct model input: GRPO groups and best-of-n samples often repeat
        a completion, and scoring is batch-invariant, so a repeat gets the very same reward without running again.

        A pair the model cannot format (its chat template refuses the conversation) is rewritten by `repair`, first
        rewrite that formats wins; without one, or when none does, the request is refused naming the pair."""
        formatter = self.scorer.formatter
        encoded, failures = formatter.try_encode_many(prompts, completions)
        repairs = ["none"] * len(prompts)
        for i, error in sorted(failures.items()):
            for name, prompt, completion in repair(prompts[i], completions[i]) if repair else ():
                fixed, still = formatter.try_encode_many([prompt], [completion])
                if not still:
                    encoded[i], repairs[i] = fixed[0], name
                    break
            else:
                raise refusal(error, field_of(i), prompts[i])
        distinct, index = dedupe([e for e in encoded if e is not None])
        return distinct, index, tuple(repairs)

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


class Pipeline:
    """The live model and the path every scoring request takes through it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model: ServedModel | None = None
        self._tokenizer_pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenize")
        self._load_lock = asyncio.Lock()
        metrics.queue_depth.set_function(lambda: self.model.batcher.depth if self.model else 0)
        metrics.expected_wait.set_function(lambda: self.model.batcher.expected_wait() if self.model else 0.0)
        self._retiring: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Future[int] | None = None
        self.refused = 0  # admitted pairs answered 503 at the drain deadline (the process then exits non-zero)

    def refusal(self) -> Overloaded | None:
        """Overloaded when even one more pair would not be admitted now (so a request can be refused unread)."""
        model = self.model
        return model.batcher.refusal(1) if model is not None else None

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

    async def score(self, request: ScoringRequest, repair: Repair | None = None) -> ScoreResult:
        """Check the request's limits, then score its pairs on the live model."""
        prompts, completions = request.pairs()
        self.check_limits(request.texts(), len(prompts))
        return await self.score_pairs(prompts, completions, request.pair_field, repair)

    async def score_pairs(
        self,
        prompts: Sequence[Text],
        completions: Sequence[Text],
        field_of: Callable[[int], str] = lambda i: f"pair {i}",
        repair: Repair | None = None,
    ) -> ScoreResult:
        model = self.model
        if model is None:
            raise NotReady("no model loaded yet")
        if not prompts:
            return ScoreResult(np.zeros((0, *model.scorer.shape), dtype=np.float32), np.zeros(0, dtype=bool), model)
        with model.batcher.reserve(len(prompts)) as room:  # 429 before spending any CPU on an overloaded server
            started = time.perf_counter()
            if _inline([*prompts, *completions], self.settings.inline_tokenize_chars):
                encoded, index, repairs = model.encode(prompts, completions, field_of, repair)  # no thread hop
            else:
                loop = asyncio.get_running_loop()
                try:
                    work = loop.run_in_executor(
                        self._tokenizer_pool, model.encode, prompts, completions, field_of, repair
                    )
                except RuntimeError:  # the pool was shut down: the server is stopping
                    raise NotReady("the server is shutting down", headers={"Retry-After": "1"}) from None
                encoded, index, repairs = await work
            self.metrics.tokenize_latency.observe(time.perf_counter() - started)
            repeats = len(index) - len(encoded)
            if repeats:
                room.shrink(repeats)
                self.metrics.repeats.inc(repeats)
            scores = await room.scores(encoded)
        heads = np.asarray(scores, dtype=np.float32)[index]
        if not np.all(np.isfinite(heads)):
            raise InferenceFailed("the model returned a reward that is not a finite number")
        truncated = np.array([encoded[i].truncated for i in index], dtype=bool)
        tokens = sum(len(encoded[i]) for i in index)
        result = ScoreResult(heads, truncated, model, tokens, repairs)
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
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("now serving %s; %s drains in the background", new.model_id, old.model_id)
        return new

    async def _retire(self, old: ServedModel) -> None:
        await old.close(self.settings.drain_timeout)
        await asyncio.to_thread(_return_freed_memory)

    async def close(self) -> int:
        """Finish every accepted pair (live and retiring models) within RM_DRAIN_SECONDS, answer what is still queued
        then with 503 + Retry-After, and release the threads. Returns the admitted pairs refused at the deadline.

        Called at SIGTERM, so the deadline falls before the server's own backstop cuts connections; later calls
        (the lifespan's end) wait for the same drain."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        return await asyncio.shield(self._closing)

    async def _close(self) -> int:
        timeout = self.settings.drain_timeout
        refused = await self.model.close(timeout) if self.model is not None else 0
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=timeout)
        # The tokeniser threads finish what they hold (its pairs then meet the closed queue: 503) and exit; none of
        # their work is cancelled, which would end its request without an answer.
        self._tokenizer_pool.shutdown(wait=False)
        if refused:
            log.error("the drain deadline (%g s) passed: %d admitted pairs were answered 503", timeout, refused)
        self.refused = refused
        return refused
