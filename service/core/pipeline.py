"""The request path: a ScoringJob -> limits -> tokenise (repairing what the template refuses, where a protocol can),
deduplicate -> the live model's batch queue -> rewards, as a ScoreResult.

Every protocol turns its request into one ScoringJob and scores it through `Pipeline.score`; this is testable
without HTTP (tests/service/test_pipeline.py). A request keeps the LiveModel it started with, so a reload that
swaps the slot's model never mixes two models inside one answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from models.formatting import Encoded, dedupe
from models.messages import FormatError, Text
from models.objectives import ObjectiveError, by_objective, combine, weight_vector

from .errors import InferenceFailed, InvalidInput, NotReady, Overloaded, TooLarge
from .metrics import Metrics
from .models import LiveModel, ModelSlot
from .settings import Settings

# A protocol's way out when the model's chat template refuses a pair: rewrites of (prompt, completion), boldest last,
# each named for the metrics. /get_reward has one (a legitimate rollout never gets a 4xx); the others answer 4xx.
Repair = Callable[[Text, Text], Iterable[tuple[str, Text, Text]]]


@dataclass(frozen=True)
class ScoringJob:
    """What a protocol asks of the core, computed once from its request: the pairs, where each came from in the
    body (`names`, for errors), every text by field name (for the size limits) and, per pair, a label the protocol
    may need back (OpenRLHF's `labels`, say)."""

    prompts: list[Text]
    completions: list[Text]
    names: list[str]
    texts: list[tuple[str, Text]]
    labels: list[object] | None = None
    repair: Repair | None = None

    def __post_init__(self) -> None:
        if not len(self.prompts) == len(self.completions) == len(self.names):
            raise ValueError("a job needs one prompt, completion and name per pair")


def refusal(error: FormatError, name: str, prompt: Text) -> InvalidInput:
    """A pair the model cannot format, as a 4xx naming the pair and, for a refused conversation, the message."""
    where = name
    if error.message is not None:
        n_prompt = 1 if isinstance(prompt, str) else len(prompt)
        side, k = ("prompt", error.message) if error.message < n_prompt else ("completion", error.message - n_prompt)
        where = f"{name} ({side} message {k}, role {error.role!r})"
    return InvalidInput(f"{where}: {error.reason}", field=name)


@dataclass(frozen=True)
class ScoreResult:
    heads: np.ndarray  # float32 rewards in request order: (n,), or (n, k) for a bundle with k objectives
    truncated_mask: np.ndarray  # bool per pair: cut to the model's max length
    model: LiveModel
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
        meta, stats = self.model.bundle.meta, self.model.stats
        try:  # the weights name this model's objectives, or a clear 422 (a model with one reward takes none)
            vector = weight_vector(meta, weights) if meta.objectives or weights else None
        except ObjectiveError as e:
            raise InvalidInput(f"weights: {e}", field="weights") from None
        if not (self.model.normalize_default if normalize is None else normalize):
            return _finite(combine(self.heads, meta, weights)) if weights else self.raw.tolist()
        if stats is None:
            raise InvalidInput(
                "normalize: this bundle records no reward statistics (exported without evaluation data); "
                "ask for raw rewards or re-export it with --eval-data",
                field="normalize",
            )
        return _finite(stats.normalize(self.heads, vector))

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


def encode(model: LiveModel, job: ScoringJob) -> tuple[list[Encoded], list[int], tuple[str, ...]]:
    """Tokenise, then keep one copy of each distinct model input: GRPO groups and best-of-n samples often repeat a
    completion, and scoring is batch-invariant, so a repeat gets the very same reward without running again.

    A pair the model cannot format (its chat template refuses the conversation) is rewritten by the job's repair,
    first rewrite that formats wins; without one, or when none does, the request is refused naming the pair."""
    formatter = model.scorer.formatter
    encoded, failures = formatter.try_encode_many(job.prompts, job.completions)
    repairs = ["none"] * len(job.prompts)
    for i, error in sorted(failures.items()):
        for name, prompt, completion in job.repair(job.prompts[i], job.completions[i]) if job.repair else ():
            fixed, still = formatter.try_encode_many([prompt], [completion])
            if not still:
                encoded[i], repairs[i] = fixed[0], name
                break
        else:
            raise refusal(error, job.names[i], job.prompts[i])
    distinct, index = dedupe([e for e in encoded if e is not None])
    return distinct, index, tuple(repairs)


class Pipeline:
    """The path every scoring request takes through the live model."""

    def __init__(self, settings: Settings, metrics: Metrics, models: ModelSlot) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models = models
        self._tokenizer_pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenize")
        metrics.queue_depth.set_function(lambda: models.live.batcher.depth if models.live else 0)
        metrics.expected_wait.set_function(lambda: models.live.batcher.expected_wait() if models.live else 0.0)

    def refusal(self) -> Overloaded | None:
        """Overloaded when even one more pair would not be admitted now (so a request can be refused unread)."""
        live = self.models.live
        return live.batcher.refusal(1) if live is not None else None

    def check_limits(self, job: ScoringJob) -> None:
        """413 for too many pairs or an over-long text, naming the field."""
        limit = self.settings.max_items_per_request
        if len(job.prompts) > limit:
            raise TooLarge(f"{len(job.prompts)} items in one request; the limit is {limit} (split the request)")
        max_chars = self.settings.max_chars_per_text
        for name, text in job.texts:
            size = len(text) if isinstance(text, str) else sum(len(str(m.get("content") or "")) for m in text)
            if size > max_chars:
                raise TooLarge(f"{name}: {size} characters; the limit is {max_chars}", field=name)

    async def score(self, job: ScoringJob) -> ScoreResult:
        """Check the job's limits, then score its pairs on the live model."""
        self.check_limits(job)
        model = self.models.live
        if model is None:
            raise NotReady("no model loaded yet")
        if not job.prompts:
            return ScoreResult(np.zeros((0, *model.scorer.shape), dtype=np.float32), np.zeros(0, dtype=bool), model)
        with model.batcher.reserve(len(job.prompts)) as room:  # 429 before spending any CPU on an overloaded server
            started = time.perf_counter()
            if _inline([*job.prompts, *job.completions], self.settings.inline_tokenize_chars):
                encoded, index, repairs = encode(model, job)  # no thread hop
            else:
                try:
                    work = asyncio.get_running_loop().run_in_executor(self._tokenizer_pool, encode, model, job)
                except RuntimeError:  # the pool was shut down: the server is stopping
                    raise NotReady("the server is shutting down", retry_after=1) from None
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
        raw = result.raw
        for value in raw.tolist():
            self.metrics.scores.observe(value)
        # An append; the drift statistics are computed when /metrics is scraped.
        self.metrics.drift.record(model.model_id, raw, heads if heads.ndim == 2 else None, truncated, job.completions)
        return result

    def close(self) -> None:
        """Release the tokeniser threads once the drain is over; they finish what they hold (its pairs meet the
        closed queue: 503) and none of their work is cancelled, which would end its request without an answer."""
        self._tokenizer_pool.shutdown(wait=False)
