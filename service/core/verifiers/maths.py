"""The math verifier: the final answer a completion gives, extracted by a configurable rule, checked for equivalence
with the reference by math-verify (LaTeX, \\boxed{}, plain numbers, fractions and decimals, sets, intervals).

Runs inside a verifier worker process: math-verify is called with its own (SIGALRM) timeouts off, because the
process that calls it is killed from outside when its deadline passes (a big-integer power holds the GIL: no thread
and no signal can stop it)."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

Extraction = Literal["auto", "boxed", "answer_tag", "answer_line"]
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


class NoAnswer(Exception):
    """The completion gives no answer the extraction rule can find."""


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    open_at = text.find("{", start)
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def extract(completion: str, rule: Extraction) -> str:
    """The answer text the rule finds, as math-verify will read it; NoAnswer if there is none."""
    if rule == "auto":
        return completion
    if rule == "boxed":
        found = last_boxed(completion)
    elif rule == "answer_tag":
        tags = _ANSWER_TAG.findall(completion)
        found = tags[-1].strip() if tags else None
    else:
        lines = _ANSWER_LINE.findall(completion)
        found = lines[-1] if lines else None
    if not found or not found.strip():
        raise NoAnswer(f"no answer found by the {rule!r} rule")
    return f"${found.strip()}$"


def _parse(text: str) -> list[Any]:
    from math_verify import parse

    return list(parse(text, parsing_timeout=None))


def parse_reference(reference: str) -> list[Any]:
    """A reference as math-verify reads it, with or without LaTeX delimiters ("\\{1,2\\}", "$x^2$", "0.5")."""
    for candidate in (reference, f"${reference}$", f"\\boxed{{{reference}}}"):
        parsed = _parse(candidate)
        if parsed:
            return parsed
    raise ValueError(f"the reference {reference[:80]!r} is not an answer math-verify can read")


def check(completion: str, reference: str, rule: Extraction = "boxed") -> bool:
    """Whether the completion's final answer equals the reference (NoAnswer if it gives none)."""
    from math_verify import verify

    gold = parse_reference(reference)
    answer = _parse(extract(completion, rule))
    if not answer:
        raise NoAnswer("the answer could not be read as math")
    return bool(verify(gold, answer, timeout_seconds=None))


def quiet() -> None:
    """math-verify warns on every call that its timeouts are off: they are, on purpose (see the module docstring)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
