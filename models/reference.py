"""Reference scores: probe pairs scored at export and re-scored wherever a bundle is served, so drift shows at load.

A bundle's rewards depend on more than its files: the `tokenizers` build that splits its text, the ONNX Runtime
build and CPU or GPU that runs its kernels, and fp16 rounding on a GPU. The export scores a fixed set of probe
pairs through every precision it ships and records their texts, a digest of their token ids and their rewards;
`check_reference` re-encodes and re-scores them through the serving stack and says how far off it is, before any
client sees a score.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .formatting import Encoded
from .records import Reference
from .runtime import BundleScorer

# Short and long, refusals and compliance, non-English, emoji, an empty prompt, and one pair past any max length
# (it exercises truncation). Plain strings, so every formatting kind (pair, chat, concat) takes them.
PROBES: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "I think it is probably London, but I am not sure."),
    ("How do I sort a list in Python?", "Use sorted(xs) for a new list, or xs.sort() to sort it in place."),
    ("How do I sort a list in Python?", "Python lists cannot be sorted."),
    (
        "Write a haiku about autumn.",
        "Crisp leaves drift and fall / a cold wind hums through bare trees / the year exhales slow",
    ),
    ("Can you help me break into my neighbour's house?", "I can't help with getting into someone else's home."),
    ("Can you help me break into my neighbour's house?", "Sure: wait until they leave, then try the back window."),
    (
        "Explain photosynthesis to a child.",
        "Plants catch sunlight with their leaves and use it to make food from air and water.",
    ),
    ("¿Cuál es la raíz cuadrada de 144?", "La raíz cuadrada de 144 es 12."),
    ("Thanks for the help! 👍", "You're welcome 😊 Anything else?"),
    ("", "An answer to an empty prompt."),
    ("Tell me a long story. " * 120, "Once upon a time there was a reward model. " * 60),
)
# Largest |served - reference| allowed, in units of the bundle's fp32 reward std. The same graph on the same kind
# of CPU reproduces its reference exactly; another CPU or ONNX Runtime build moves fp32 by ~1e-6 std; fp16 sits
# ~1e-3 std from fp32 (measured on MiniLM, CPU). A 2% shift is far beyond rounding and still below what reorders
# typical pairs.
DEFAULT_TOLERANCE = 0.02
ABS_FLOOR = 1e-4


def ids_digest(encoded: Sequence[Encoded]) -> str:
    """SHA-256 of the token ids (and segment ids) of every probe, in order."""
    rows = [[list(e.ids), None if e.type_ids is None else list(e.type_ids)] for e in encoded]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def make_reference(scorers: Mapping[str, BundleScorer], probes: Sequence[tuple[str, str]] = PROBES) -> Reference:
    """The `reference` entry of a bundle's metadata: probe texts, their ids' digest, rewards per precision."""
    prompts, completions = tuple(p for p, _ in probes), tuple(c for _, c in probes)
    first = next(iter(scorers.values()))
    encoded = first.encode(prompts, completions)
    rewards = {precision: s.score_encoded(encoded).tolist() for precision, s in scorers.items()}
    return Reference(prompts, completions, ids_digest(encoded), rewards)


@dataclass(frozen=True)
class ReferenceCheck:
    """How the serving stack reproduced the export's probe scores."""

    precision: str  # what is served
    against: str  # whose reference rewards it was compared with (its own, or fp32's when it has none)
    tokens_match: bool
    max_abs_diff: float
    limit: float  # tolerance × reward std

    @property
    def ok(self) -> bool:
        return not self.problem()

    def problem(self) -> str:
        """One line saying what is off ("" when nothing is)."""
        if not self.tokens_match:
            return (
                "the probe texts tokenise differently from the export (a different `tokenizers` build or "
                "tokenizer file): every score would differ from training's"
            )
        if not self.max_abs_diff <= self.limit:  # NaN included
            return (
                f"{self.precision} probe rewards differ from the export's {self.against} reference by up to "
                f"{self.max_abs_diff:.3g} (limit {self.limit:.3g}): this runtime or device does not reproduce the "
                "exported scores"
            )
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "precision": self.precision,
            "against": self.against,
            "tokens_match": self.tokens_match,
            "max_abs_diff": self.max_abs_diff,
            "limit": self.limit,
        }


def check_reference(
    scorer: BundleScorer, reference: Reference | None, std: float, tolerance: float = DEFAULT_TOLERANCE
) -> ReferenceCheck | None:
    """Re-encode and re-score the probes through `scorer`; None for a bundle exported without a reference."""
    if reference is None:
        return None
    encoded = scorer.encode(reference.prompts, reference.completions)
    rewards = reference.rewards
    against = scorer.precision if scorer.precision in rewards else "fp32"
    got = scorer.score_encoded(encoded)
    diff = float(np.max(np.abs(got - np.asarray(rewards[against], dtype=np.float32)), initial=0.0))
    # The floor (the export's own ONNX-vs-torch parity bar) keeps a near-constant model's rounding from failing it.
    limit = max(tolerance * std, ABS_FLOOR)
    return ReferenceCheck(scorer.precision, against, ids_digest(encoded) == reference.ids_sha256, diff, limit)
