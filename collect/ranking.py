"""Rankings of 3-4 answers: shown in a random order, stored as the pairs they imply (so the quorum, disputes,
exports and pair agreement work on them unchanged), read back as rankings for their own export and Kendall's tau."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .store import Connection

SIZES = (3, 4)  # answers per ranking screen; two answers stay a pair, more than four would be too many to read
LETTERS = "ABCD"


@dataclass(frozen=True)
class RankShowing:
    assignment_ids: tuple[int, ...]
    prompt: str
    answers: tuple[str, ...]  # in the order shown: A, B, C (, D)


@dataclass(frozen=True)
class Leased:
    """One of the pair leases behind a ranking screen."""

    assignment_id: int
    first: int  # completion ids, first < second
    second: int
    a_is_first: bool  # the first completion is shown before the second


def pairs_of(count: int) -> int:
    return count * (count - 1) // 2


def shown_order(leases: Sequence[Leased]) -> list[int]:
    """Completion ids in the order shown. The sides of every pair were set from one shuffled order, so the answer
    shown first leads all its pairs, the second all but one, and so on."""
    leads: Counter[int] = Counter()
    for lease in leases:
        leads[lease.first if lease.a_is_first else lease.second] += 1
        leads[lease.second if lease.a_is_first else lease.first] += 0
    return sorted(leads, key=lambda c: -leads[c])


def sides_for(order: Sequence[int], first: int, second: int) -> bool:
    """a_is_first of the pair (first, second) when the answers are shown in `order`."""
    return order.index(first) < order.index(second)


def implied_choices(leases: Sequence[Leased], letters: Sequence[str]) -> dict[int, str]:
    """assignment id -> 'A' or 'B' for each pair, from a ranking given as shown letters, best first."""
    shown = shown_order(leases)
    if sorted(letters) != sorted(LETTERS[: len(shown)]):
        raise ValueError(f"order must rank each of {', '.join(LETTERS[: len(shown)])} exactly once")
    ranked = [shown[LETTERS.index(letter)] for letter in letters]
    place = {completion: i for i, completion in enumerate(ranked)}
    choices = {}
    for lease in leases:
        winner = lease.first if place[lease.first] < place[lease.second] else lease.second
        shown_first = lease.first if lease.a_is_first else lease.second
        choices[lease.assignment_id] = "A" if winner == shown_first else "B"
    return choices


RANKED_VOTES = """
SELECT a.ranking, a.item_id, a.winner, a.created, n.name, i.prompt_id, i.first_id, i.second_id, p.text AS prompt
FROM answers a JOIN annotators n ON n.id = a.annotator_id JOIN items i ON i.id = a.item_id
JOIN prompts p ON p.id = i.prompt_id
WHERE a.undone IS NULL AND a.ranking IS NOT NULL AND a.choice != 'skip' ORDER BY a.ranking, a.id
"""


def _rankings(conn: Connection) -> list[dict[str, Any]]:
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in conn.execute(RANKED_VOTES).fetchall():
        grouped[int(row["ranking"])].append(row)
    found = []
    for rows in grouped.values():
        wins: Counter[int] = Counter()
        for r in rows:
            winner, loser = (
                (r["first_id"], r["second_id"]) if r["winner"] == "first" else (r["second_id"], r["first_id"])
            )
            wins[int(winner)] += 1
            wins[int(loser)] += 0
        head = rows[0]
        found.append(
            {
                "prompt_id": int(head["prompt_id"]),
                "prompt": head["prompt"],
                "annotator": head["name"],
                "order": sorted(wins, key=lambda c: -wins[c]),  # a strict ranking: wins are n-1, n-2, ..., 0
                "pairs": {int(r["item_id"]): str(r["winner"]) for r in rows},
                "created": float(head["created"]),
            }
        )
    return found


def export_rankings(conn: Connection) -> list[dict[str, Any]]:
    """Each annotator's ranking as given: {"prompt", "completions" (best first), "ranks", "annotator", "time"}."""
    texts = {int(r[0]): str(r[1]) for r in conn.execute("SELECT id, text FROM completions").fetchall()}
    return [
        {
            "prompt": r["prompt"],
            "completions": [texts[c] for c in r["order"]],
            "ranks": list(range(1, len(r["order"]) + 1)),
            "annotator": r["annotator"],
            "time": datetime.fromtimestamp(r["created"], UTC).isoformat(timespec="milliseconds"),
        }
        for r in _rankings(conn)
    ]


def kendall_agreement(conn: Connection) -> dict[str, Any]:
    """Kendall's tau between every two annotators who ranked the same answers: (agreeing − disagreeing pairs) /
    pairs compared, averaged over those annotator pairs (1: identical rankings, −1: reversed)."""
    by_prompt: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ranking in _rankings(conn):
        by_prompt[ranking["prompt_id"]].append(ranking)
    taus = []
    for group in by_prompt.values():
        for one, other in itertools.combinations(group, 2):
            shared = one["pairs"].keys() & other["pairs"].keys()
            if shared:
                same = sum(one["pairs"][i] == other["pairs"][i] for i in shared)
                taus.append((2 * same - len(shared)) / len(shared))
    return {
        "rankings": sum(len(g) for g in by_prompt.values()),
        "annotator_pairs": len(taus),
        "mean_kendall_tau": round(sum(taus) / len(taus), 4) if taus else None,
    }
