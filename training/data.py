"""Every preference-data format a user brings -> `PreferencePair`; validation with file:record errors; split by prompt.

Formats (one record type per row, detected per record):
  tutorial      {"question", "chosen", "rejected"}
  explicit      {"prompt", "chosen", "rejected"[, "margin"]}
  implicit      {"chosen", "rejected"}: whole "\\n\\nHuman: … \\n\\nAssistant: …" transcripts (or message lists)
                sharing everything up to the last assistant turn, split there
  conversational  any of the above with lists of {"role", "content"} messages instead of strings
  ranked        {"prompt", "completions": [...], "ranks": [...]} (1 = best) -> every ordered pair, ties dropped
Files are read into records by training.files (JSON, JSON lines, CSV, Parquet, hub datasets).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.messages import ASSISTANT_MARKER, Text

from .files import DataError, hub_records, iter_records

PROMPT_KEYS = ("prompt", "question")
OBJECTIVE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class PreferencePair:
    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = None
    source: str = ""  # "file:line" the pair came from
    objective: str = ""  # which head learns from it (multi-objective fits); "" when the data names none

    @property
    def prompt_key(self) -> str:
        """A canonical string for the prompt (pairs with equal keys share a prompt)."""
        return self.prompt if isinstance(self.prompt, str) else json.dumps(self.prompt, sort_keys=True)


@dataclass
class LoadReport:
    """What loading kept and, with skip_invalid, what it skipped and why."""

    pairs: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    per_file: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- record -> pairs


def _text(record: Mapping[str, Any], key: str, *, allow_empty: bool) -> Text:
    if key not in record:
        raise DataError(f"missing key {key!r} (record has: {', '.join(map(str, record)) or 'no keys'})")
    value = record[key]
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise DataError(f"empty {key!r}")
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    ):
        msgs = [{"role": m["role"], "content": m["content"]} for m in value]
        if not allow_empty and not any(m["content"].strip() for m in msgs):
            raise DataError(f"empty {key!r}")
        return msgs
    if isinstance(value, list) and not value and allow_empty:
        return []
    raise DataError(f"{key!r} must be a string or a list of {{'role', 'content'}} messages, got {type(value).__name__}")


def _objective(record: Mapping[str, Any]) -> str:
    value = record.get("objective")
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not OBJECTIVE_NAME.fullmatch(value):
        raise DataError(f"'objective' must be a name such as 'helpful' (letters, digits, _ or -), got {value!r}")
    return value


def _margin(record: Mapping[str, Any]) -> float | None:
    value = record.get("margin")
    if value is None or value == "":
        return None
    try:
        margin = float(value)
    except (TypeError, ValueError):
        raise DataError(f"'margin' must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(margin):
        raise DataError(f"'margin' must be a finite number, got {value!r}")
    return margin


def split_transcripts(chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """Implicit prompt: split two transcripts at the last assistant turn they share a prefix up to."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        n = 0
        limit = min(len(chosen), len(rejected))
        while n < limit and chosen[n] == rejected[n]:
            n += 1
        cut = chosen.rfind(ASSISTANT_MARKER, 0, n)  # the marker must lie wholly inside the shared prefix
        if cut < 0:
            raise DataError(
                f"no prompt key, and chosen/rejected share no prefix ending in {ASSISTANT_MARKER!r} to split at"
            )
        end = cut + len(ASSISTANT_MARKER)
        return chosen[:end], chosen[end:], rejected[end:]
    if isinstance(chosen, list) and isinstance(rejected, list):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        while n > 0 and chosen[n - 1]["role"] == "assistant":
            n -= 1  # the prompt ends before the assistant turns being compared
        if n == 0:
            raise DataError("no prompt key, and chosen/rejected messages share no prompt prefix")
        return chosen[:n], chosen[n:], rejected[n:]
    raise DataError("no prompt key, and chosen/rejected are not both strings or both message lists")


def _is_empty(text: Text) -> bool:
    if isinstance(text, str):
        return not text.strip()
    return not any(str(m["content"]).strip() for m in text)


def pairs_from_record(record: Any, source: str) -> list[PreferencePair]:
    """One record -> its pairs (a ranked record gives several). Raises DataError without the source prefix."""
    if not isinstance(record, Mapping):
        raise DataError(f"record must be an object, got {type(record).__name__}")
    if "completions" in record or "ranks" in record:
        return _ranked_pairs(record, source)
    prompt_key = next((k for k in PROMPT_KEYS if k in record), None)
    chosen = _text(record, "chosen", allow_empty=False)
    rejected = _text(record, "rejected", allow_empty=False)
    if prompt_key is None:
        prompt, chosen, rejected = split_transcripts(chosen, rejected)
    else:
        prompt = _text(record, prompt_key, allow_empty=True)
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if _is_empty(value):
            raise DataError(f"empty {name!r} (after removing the shared prompt)")
    if chosen == rejected:
        raise DataError("chosen == rejected")
    return [PreferencePair(prompt, chosen, rejected, _margin(record), source, _objective(record))]


def _ranked_pairs(record: Mapping[str, Any], source: str) -> list[PreferencePair]:
    prompt = _text(record, next((k for k in PROMPT_KEYS if k in record), "prompt"), allow_empty=True)
    completions, ranks = record.get("completions"), record.get("ranks")
    if not isinstance(completions, list) or not isinstance(ranks, list):
        raise DataError("ranked record needs list 'completions' and list 'ranks'")
    if len(completions) != len(ranks):
        raise DataError(f"{len(completions)} completions but {len(ranks)} ranks")
    texts = [_text({f"completions[{i}]": c}, f"completions[{i}]", allow_empty=False) for i, c in enumerate(completions)]
    if not all(isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r) for r in ranks):
        raise DataError("'ranks' must be finite numbers (1 = best)")
    pairs = []
    for i, better in enumerate(texts):
        for j, worse in enumerate(texts):
            if ranks[i] < ranks[j] and better != worse:
                pairs.append(PreferencePair(prompt, better, worse, None, source, _objective(record)))
    return pairs


def load_pairs(
    paths: Sequence[str | Path], skip_invalid: bool = False, report: LoadReport | None = None
) -> list[PreferencePair]:
    """Load and validate pairs from files (or hub dataset names). Bad records raise, or are skipped and counted."""
    report = report if report is not None else LoadReport()
    pairs: list[PreferencePair] = []
    for raw in paths:
        path = Path(raw)
        if path.exists():
            records = iter_records(path)
        elif isinstance(raw, str) and "/" in raw and not raw.startswith((".", "/")) and not Path(raw).suffix:
            records = hub_records(raw)
        else:
            raise DataError(f"{raw}: no such file")
        before = len(pairs)
        for source, record in records:
            try:
                if isinstance(record, DataError):
                    raise record
                pairs.extend(pairs_from_record(record, source))
            except DataError as e:
                if not skip_invalid:
                    raise DataError(f"{source}: {e} (pass --skip-invalid to skip and count such records)") from None
                report.skipped[str(e).split(" (")[0]] += 1
        report.per_file[str(raw)] = len(pairs) - before
        if len(pairs) == before:
            raise DataError(f"{raw}: no valid preference pairs")
    report.pairs = len(pairs)
    return pairs


def objective_groups(data: Sequence[str]) -> list[tuple[str, str]]:
    """`--data` as (objective, path) pairs: `helpful=A.jsonl B.jsonl harmless=C.jsonl` names the head that learns from
    the files up to the next `name=`; files before any name (or a whole list without names) get "" (the records'
    own `objective` column, if any, decides)."""
    out, current = [], ""
    for item in data:
        name, eq, rest = item.partition("=")
        if eq and OBJECTIVE_NAME.fullmatch(name) and not Path(item).exists():
            current, item = name, rest
            if not item:
                continue
        out.append((current, item))
    return out


def load_objectives(
    data: Sequence[str], skip_invalid: bool = False, report: LoadReport | None = None
) -> tuple[list[PreferencePair], list[str]]:
    """Pairs of every file with their objective (the file group's name, else the record's column) and the
    objectives in order of first appearance; ([pairs], []) when no data names any (one reward, as before)."""
    pairs: list[PreferencePair] = []
    for objective, path in objective_groups(data):
        loaded = load_pairs([path], skip_invalid=skip_invalid, report=report)
        pairs += [dataclasses.replace(p, objective=objective or p.objective) for p in loaded]
    names = list(dict.fromkeys(p.objective for p in pairs))
    if names == [""]:
        return pairs, []
    if "" in names:
        unnamed = next(p.source for p in pairs if not p.objective)
        raise DataError(
            f"{unnamed}: some pairs have no objective while others do; name every file (name=FILE) or every record"
        )
    return pairs, names


# ---------------------------------------------------------------- split and fingerprint


def prompt_bucket(key: str, seed: int) -> float:
    """A stable number in [0, 1) for a prompt: the same on every machine, run and file order."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_prompt(
    pairs: Sequence[PreferencePair], eval_fraction: float, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic train/eval split in which pairs sharing a prompt always land on the same side."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    train: list[PreferencePair] = []
    held: list[PreferencePair] = []
    for pair in pairs:
        (held if prompt_bucket(pair.prompt_key, seed) < eval_fraction else train).append(pair)
    return train, held


def sample_pairs(pairs: Sequence[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """Up to `n` of `pairs`, drawn without replacement by `seed`, in their original order."""
    import numpy as np

    picks = np.random.default_rng(seed).choice(len(pairs), size=min(n, len(pairs)), replace=False)
    return [pairs[i] for i in sorted(picks)]


def fingerprint(pairs: Iterable[PreferencePair]) -> str:
    """SHA-256 of the pairs' content (not their sources), recorded in the bundle."""
    digest = hashlib.sha256()
    for p in pairs:
        fields = [p.prompt, p.chosen, p.rejected, p.margin] + ([p.objective] if p.objective else [])
        digest.update(json.dumps(fields, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()
