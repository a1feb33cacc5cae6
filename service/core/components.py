"""The reward components, one small class each, registered by kind: `model`, `math`, `code`, `format`, `length`,
`repetition`. A team adds its own in one file: a `ComponentSpec` subclass for its options and a `Component` subclass
with `score`, decorated `@register("kind")` (and imported once, e.g. from service/core/verifiers/__init__.py).

The interface: `score(batch)` gets the request's samples (prompt, completion, reference), the deadline of the
request's budget and, for the model component, the model's result; it returns one `Outcome` per sample — a value, or
the failure that kept the sample from having one ("timeout": the sample's own limit; "over_budget": the request's
deadline came first; "no_answer", "sandbox", "error: ..."), which then takes the spec's `on_failure` value. A component
must answer by the deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from models.messages import Text, completion_text

from .recipe import ComponentSpec
from .verifiers import code as code_verifier
from .verifiers.pool import Outcome, WorkerPool
from .verifiers.sandbox import Limits, Sandbox


@dataclass(frozen=True)
class Sample:
    prompt: Text
    completion: Text
    reference: Any = None  # an answer string, or tests; None when the request gave none

    @property
    def text(self) -> str:
        """The completion as plain text (an assistant message's content)."""
        if isinstance(self.completion, str):
            return self.completion
        return completion_text(self.completion).lstrip()


@dataclass
class Batch:
    samples: list[Sample]
    deadline: float  # time.monotonic() by which the request's budget runs out
    model: Any = None  # the model's ScoreResult (model component)
    normalize: bool | None = None
    weights: dict[str, float] | None = None


@dataclass(frozen=True)
class Tools:
    """What components may use: the verifier worker pool, the code sandbox, and a token counter (the reward model's
    tokenizer, when there is one)."""

    pool: WorkerPool | None
    sandbox: Sandbox | None
    count_tokens: Callable[[str], int] | None


class Component:
    Spec: ClassVar[type[ComponentSpec]] = ComponentSpec

    def __init__(self, spec: ComponentSpec, tools: Tools) -> None:
        self.spec = spec
        self.tools = tools

    async def score(self, batch: Batch) -> list[Outcome]:
        raise NotImplementedError


REGISTRY: dict[str, type[Component]] = {}


def register(kind: str) -> Callable[[type[Component]], type[Component]]:
    def add(cls: type[Component]) -> type[Component]:
        REGISTRY[kind] = cls
        return cls

    return add


def specs() -> dict[str, type[ComponentSpec]]:
    return {kind: cls.Spec for kind, cls in REGISTRY.items()}


class ModelSpec(ComponentSpec):
    kind: Literal["model"] = "model"
    objective: str | None = Field(None, description="A multi-objective bundle: one objective's reward.")
    weights: dict[str, float] | None = Field(None, description="A multi-objective bundle: its own combination.")
    normalize: bool | None = Field(None, description="(r − mean) / std with the bundle's statistics.")


@register("model")
class ModelComponent(Component):
    Spec = ModelSpec

    async def score(self, batch: Batch) -> list[Outcome]:
        spec = self.spec
        assert isinstance(spec, ModelSpec) and batch.model is not None
        if spec.objective is not None:
            values = batch.model.objectives().get(spec.objective)
            if values is None:
                raise ValueError(f"the served model has no objective {spec.objective!r}")
        else:
            normalize = spec.normalize if spec.normalize is not None else batch.normalize
            values = batch.model.values(normalize, spec.weights or batch.weights)
        return [Outcome(float(v)) for v in values]


async def _pooled(component: Component, batch: Batch, task: Callable[[Sample], dict[str, Any] | None]) -> list[Outcome]:
    """Each sample's task in the worker pool: its own timeout once a worker has it, and the request's deadline."""
    pool = component.tools.pool
    assert pool is not None
    timeout = float(getattr(component.spec, "timeout", 2.0))

    async def one(sample: Sample) -> Outcome:
        work = task(sample)
        if work is None:
            return Outcome(None, "no_answer")
        answer = await pool.run(work, timeout, batch.deadline)
        if isinstance(answer, Outcome):
            return answer
        return Outcome(1.0 if answer.get("value") else 0.0) if answer.get("ok") else Outcome(None, answer["failure"])

    return list(await asyncio.gather(*(one(s) for s in batch.samples)))


class MathSpec(ComponentSpec):
    kind: Literal["math"] = "math"
    extract: Literal["boxed", "answer_tag", "answer_line", "auto"] = "boxed"
    correct: float = 1.0
    wrong: float = 0.0
    timeout: float = Field(2.0, gt=0, le=600, description="Seconds per sample; the worker is killed past it.")


@register("math")
class MathComponent(Component):
    Spec = MathSpec

    async def score(self, batch: Batch) -> list[Outcome]:
        spec = self.spec
        assert isinstance(spec, MathSpec)

        def task(sample: Sample) -> dict[str, Any] | None:
            if sample.reference is None:
                return None
            return {
                "kind": "math",
                "completion": sample.text,
                "reference": str(sample.reference),
                "extract": spec.extract,
            }

        outcomes = await _pooled(self, batch, task)
        return [Outcome(spec.correct if o.value else spec.wrong) if o.failure is None else o for o in outcomes]


class FormatSpecModel(ComponentSpec):
    kind: Literal["format"] = "format"
    pattern: str = Field(description="A regular expression the whole completion must match (DOTALL).")
    matched: float = 1.0
    unmatched: float = 0.0
    timeout: float = Field(1.0, gt=0, le=60)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return pattern


@register("format")
class FormatComponent(Component):
    """A regex runs in the worker pool: a pathological pattern on a long completion backtracks for minutes."""

    Spec = FormatSpecModel

    async def score(self, batch: Batch) -> list[Outcome]:
        spec = self.spec
        assert isinstance(spec, FormatSpecModel)
        outcomes = await _pooled(
            self, batch, lambda s: {"kind": "format", "completion": s.text, "pattern": spec.pattern}
        )
        return [Outcome(spec.matched if o.value else spec.unmatched) if o.failure is None else o for o in outcomes]


class CodeSpec(ComponentSpec):
    kind: Literal["code"] = "code"
    extract: Literal["last_fence", "whole"] = "last_fence"
    timeout: float = Field(5.0, gt=0, le=600, description="Wall seconds per test case (and its CPU seconds).")
    memory_mb: int = Field(512, ge=32)
    processes: int = Field(32, ge=1)
    file_mb: int = Field(16, ge=1)


@register("code")
class CodeComponent(Component):
    """Untrusted code: only in the sandbox, each test case its own process, killed at its wall deadline."""

    Spec = CodeSpec

    def __init__(self, spec: ComponentSpec, tools: Tools) -> None:
        super().__init__(spec, tools)
        assert isinstance(spec, CodeSpec) and tools.sandbox is not None
        limits = Limits(spec.timeout, max(1, int(spec.timeout)), spec.memory_mb, spec.processes, spec.file_mb)
        self.sandbox = tools.sandbox.with_limits(limits)

    async def score(self, batch: Batch) -> list[Outcome]:
        spec = self.spec
        assert isinstance(spec, CodeSpec)

        async def one(sample: Sample) -> Outcome:
            if sample.reference is None:
                return Outcome(None, "no_answer")
            try:
                value, failure = await asyncio.wait_for(
                    code_verifier.verify(self.sandbox, sample.text, sample.reference, spec.extract),
                    max(batch.deadline - time.monotonic(), 0.0),
                )
            except TimeoutError:  # the request's budget ran out (a case's own wall limit is answered as "timeout")
                return Outcome(None, "over_budget")
            except code_verifier.NoCode:
                return Outcome(None, "no_answer")
            except ValueError as e:  # tests the component cannot read
                return Outcome(None, f"error: {str(e)[:200]}")
            return Outcome(value, failure)

        return list(await asyncio.gather(*(one(s) for s in batch.samples)))


class LengthSpec(ComponentSpec):
    kind: Literal["length"] = "length"
    max: int = Field(ge=1, description="Above this the penalty is -1.")
    buffer: int = Field(ge=1, description="The penalty grows linearly from 0 at max - buffer to -1 at max (DAPO).")
    unit: Literal["tokens", "chars"] = "tokens"


@register("length")
class LengthComponent(Component):
    """DAPO's soft over-long penalty, in the reward model's tokens or in characters."""

    Spec = LengthSpec

    def __init__(self, spec: ComponentSpec, tools: Tools) -> None:
        super().__init__(spec, tools)
        assert isinstance(spec, LengthSpec)
        if spec.unit == "tokens" and tools.count_tokens is None:
            raise ValueError("length in tokens needs a reward model's tokenizer: this recipe serves none (use chars)")

    async def score(self, batch: Batch) -> list[Outcome]:
        spec = self.spec
        assert isinstance(spec, LengthSpec)
        count = self.tools.count_tokens if spec.unit == "tokens" else len
        assert count is not None
        start = spec.max - spec.buffer
        values = []
        for sample in batch.samples:
            n = count(sample.text)
            values.append(Outcome(0.0 if n <= start else max(-1.0, (start - n) / spec.buffer)))
        return values


class RepetitionSpec(ComponentSpec):
    kind: Literal["repetition"] = "repetition"
    n: int = Field(4, ge=1, le=32, description="Word n-grams.")


@register("repetition")
class RepetitionComponent(Component):
    """Minus the share of the completion's word n-grams that repeat an earlier one (0: none repeats)."""

    Spec = RepetitionSpec

    async def score(self, batch: Batch) -> list[Outcome]:
        spec = self.spec
        assert isinstance(spec, RepetitionSpec)
        out = []
        for sample in batch.samples:
            words = sample.text.split()
            grams = [tuple(words[i : i + spec.n]) for i in range(len(words) - spec.n + 1)]
            out.append(Outcome(len(set(grams)) / len(grams) - 1.0 if grams else 0.0))
        return out
