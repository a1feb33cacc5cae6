"""Candidate files ({"prompt", "completions": [...]} JSON lines) -> validated, merged `Candidates`, file:line errors."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPT_KEYS = ("prompt", "question")  # the same two names the training loaders accept


class CandidateError(ValueError):
    """A candidates record or file that cannot be used; the message starts with `file:line`."""


@dataclass
class Candidates:
    """Prompts in first-seen order, each with its distinct completions in first-seen order."""

    completions: dict[str, list[str]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    merged_prompts: int = 0  # records whose prompt had been seen before: merged, not doubled

    def add(self, prompt: str, completions: list[str]) -> None:
        if prompt in self.completions:
            self.merged_prompts += 1
            known = self.completions[prompt]
            known.extend(c for c in completions if c not in known)
        else:
            self.completions[prompt] = list(completions)

    @property
    def pairs(self) -> int:
        return sum(len(c) * (len(c) - 1) // 2 for c in self.completions.values())


def _string(record: dict[str, Any], key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise CandidateError(f"{where} must be a string, got {type(value).__name__}")
    return value


def parse_record(record: Any) -> tuple[str, list[str]]:
    """One record -> (prompt, distinct non-empty completions); raises CandidateError without the source prefix."""
    if not isinstance(record, dict):
        raise CandidateError(f"record must be an object, got {type(record).__name__}")
    key = next((k for k in PROMPT_KEYS if k in record), None)
    if key is None:
        raise CandidateError(f"missing key 'prompt' (record has: {', '.join(map(str, record)) or 'no keys'})")
    prompt = _string(record, key, f"{key!r}")
    if "completions" not in record:
        raise CandidateError(f"missing key 'completions' (record has: {', '.join(map(str, record))})")
    raw = record["completions"]
    if not isinstance(raw, list):
        raise CandidateError(f"'completions' must be a list of strings, got {type(raw).__name__}")
    distinct: list[str] = []
    for i, value in enumerate(raw):
        if not isinstance(value, str):
            raise CandidateError(f"'completions[{i}]' must be a string, got {type(value).__name__}")
        if value.strip() and value not in distinct:
            distinct.append(value)
    if len(distinct) < 2:
        raise CandidateError(f"needs at least two distinct non-empty completions, has {len(distinct)}")
    return prompt, distinct


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the CandidateError for that line); blank lines are ignored."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CandidateError(f"{path}: cannot read: {e.strerror or e}") from None
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            yield number, CandidateError(f"not valid UTF-8 (byte {e.start} of the line)")
            continue
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as e:
            yield number, CandidateError(f"invalid JSON: {e.msg}")


def load_candidates(paths: list[Path], skip_invalid: bool = False) -> Candidates:
    """Read JSONL candidate files; a bad record stops the load with `file:line: reason`, or is skipped and counted."""
    found = Candidates()
    for path in paths:
        before = len(found.completions) + found.merged_prompts
        for number, record in _lines(path):
            try:
                if isinstance(record, CandidateError):
                    raise record
                found.add(*parse_record(record))
            except CandidateError as e:
                if not skip_invalid:
                    raise CandidateError(f"{path}:{number}: {e} (pass --skip-invalid to skip and count)") from None
                found.skipped[str(e)] += 1
        if len(found.completions) + found.merged_prompts == before:
            raise CandidateError(f"{path}: no valid candidate records")
    return found
