"""The annotation queue: lease the next pair to an annotator, record answers (acknowledged = committed), undo."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .agreement import Quorum
from .db import transaction
from .store import Connection, Row

CHOICES = ("A", "B", "tie", "skip")
Order = Callable[[Sequence[Row]], list[int]]  # available items -> item ids, most wanted first


class QueueError(ValueError):
    """An answer or undo that cannot be applied; `status` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Showing:
    assignment_id: int
    item_id: int
    prompt: str
    a: str
    b: str
    a_is_first: bool


# Every item with its used slots (answers, plus other people's leases that have not lapsed) and this annotator's
# own assignment state; which of them are available is decided in Python, where the quorum rule lives.
CANDIDATES = """
SELECT i.id, i.prompt_id, i.first_id, i.second_id,
       (SELECT COUNT(*) FROM assignments s WHERE s.item_id = i.id
        AND (s.state = 'answered' OR (s.state = 'open' AND s.issued > :cutoff))) AS used,
       (SELECT s.state FROM assignments s WHERE s.item_id = i.id AND s.annotator_id = :me) AS mine
FROM items i ORDER BY i.id
"""
LIVE_LABELS = """
SELECT item_id, winner FROM answers WHERE undone IS NULL AND choice != 'skip' ORDER BY item_id, id
"""


@dataclass(frozen=True)
class Available:
    """The items an annotator may be shown next: `fresh` ones first (disputed pairs at the head), the ones they
    skipped only when nothing fresh is left."""

    fresh: list[Any]
    skipped: list[Any]
    disputed: frozenset[int]

    @property
    def pool(self) -> list[Any]:
        return self.fresh or self.skipped


class Queue:
    """Every read and write of the annotation state; one instance per server, thread-safe (one connection each)."""

    def __init__(self, connect: Callable[[], Connection], quorum: Quorum | int, lease_seconds: float) -> None:
        self.connect = connect
        self.quorum = quorum if isinstance(quorum, Quorum) else Quorum.of(quorum)
        self.lease_seconds = lease_seconds
        self.rng = random.Random()

    def _labels(self, conn: Connection) -> dict[int, list[str]]:
        labels: dict[int, list[str]] = defaultdict(list)
        for row in conn.execute(LIVE_LABELS).fetchall():
            labels[int(row[0])].append(str(row[1]))
        return labels

    def available(self, conn: Connection, annotator: int) -> Available:
        params = {"cutoff": time.time() - self.lease_seconds, "me": annotator}
        labels = self._labels(conn)
        fresh, skipped, disputed = [], [], set()
        for row in conn.execute(CANDIDATES, params).fetchall():
            item = int(row["id"])
            if int(row["used"]) >= self.quorum.slots(labels.get(item, [])):
                continue
            if row["mine"] in (None, "expired"):
                fresh.append(row)
                if self.quorum.disputed(labels.get(item, [])):
                    disputed.add(item)
            elif row["mine"] == "skipped":
                skipped.append(row)
        return Available(fresh, skipped, frozenset(disputed))

    def _show(self, conn: Connection, assignment_id: int) -> Showing:
        row = conn.execute(
            """SELECT s.id, s.item_id, s.a_is_first, p.text AS prompt, f.text AS first, c.text AS second
               FROM assignments s JOIN items i ON i.id = s.item_id JOIN prompts p ON p.id = i.prompt_id
               JOIN completions f ON f.id = i.first_id JOIN completions c ON c.id = i.second_id WHERE s.id = ?""",
            (assignment_id,),
        ).fetchone()
        a, b = (row["first"], row["second"]) if row["a_is_first"] else (row["second"], row["first"])
        return Showing(row["id"], row["item_id"], row["prompt"], a, b, bool(row["a_is_first"]))

    def _own_open(self, conn: Connection, annotator: int) -> int | None:
        """The annotator's open lease (a reload shows the same pair, same sides); a lapsed one only if room is left."""
        row = conn.execute(
            "SELECT id, item_id, issued FROM assignments WHERE annotator_id = ? AND state = 'open' "
            "ORDER BY issued DESC LIMIT 1",
            (annotator,),
        ).fetchone()
        if row is None:
            return None
        now = time.time()
        if row["issued"] > now - self.lease_seconds:
            return int(row["id"])
        used = conn.execute(
            "SELECT COUNT(*) FROM assignments WHERE item_id = ? AND id != ? "
            "AND (state = 'answered' OR (state = 'open' AND issued > ?))",
            (row["item_id"], row["id"], now - self.lease_seconds),
        ).fetchone()[0]
        if used < self.quorum.slots(self._labels(conn).get(int(row["item_id"]), [])):
            conn.execute("UPDATE assignments SET issued = ? WHERE id = ?", (now, row["id"]))
            return int(row["id"])
        conn.execute("UPDATE assignments SET state = 'expired' WHERE id = ?", (row["id"],))
        return None

    def next(self, annotator: int, order: Order) -> Showing | None:
        """Lease the next item to `annotator`, in the strategy's order; None when nothing is left for them.

        The strategy ranks outside the write lock (it may ask the reward service); the claim re-checks, inside
        BEGIN IMMEDIATE, that the item still has a free slot, so concurrent annotators never over-fill an item.
        """
        conn = self.connect()
        try:
            with transaction(conn):
                own = self._own_open(conn, annotator)
            if own is not None:
                return self._show(conn, own)
            offered = self.available(conn, annotator)
            # Disputed pairs first (a split holds up the export), then in the strategy's order (a stable sort).
            wanted = sorted(order(offered.pool), key=lambda i: i not in offered.disputed)
            with transaction(conn):
                free = {int(r["id"]) for r in self.available(conn, annotator).pool}
                if not free:
                    return None
                # Someone may have taken the wanted items meanwhile: the first still free, else any free one.
                item = next((i for i in wanted if i in free), None) or self.rng.choice(sorted(free))
                # A skipped pair shown again: its skip is withdrawn (stamped, never deleted), so it can be answered.
                conn.execute(
                    "UPDATE answers SET undone = ? WHERE item_id = ? AND annotator_id = ? AND choice = 'skip' "
                    "AND undone IS NULL",
                    (time.time(), item, annotator),
                )
                a_is_first = self.rng.random() < 0.5  # sides randomised per showing, recorded with it
                conn.execute(
                    """INSERT INTO assignments (item_id, annotator_id, a_is_first, state, issued)
                       VALUES (?, ?, ?, 'open', ?) ON CONFLICT (item_id, annotator_id)
                       DO UPDATE SET state = 'open', issued = excluded.issued, a_is_first = excluded.a_is_first""",
                    (item, annotator, int(a_is_first), time.time()),
                )
                assignment = conn.execute(
                    "SELECT id FROM assignments WHERE item_id = ? AND annotator_id = ?", (item, annotator)
                ).fetchone()[0]
            return self._show(conn, assignment)
        finally:
            conn.close()

    def answer(self, annotator: int, assignment_id: int, choice: str, reason: str = "") -> int:
        """Record an answer and commit it before returning its id: once the caller acknowledges, it is on disk.

        Re-sending the same answer (a browser retry) returns the same id instead of recording it twice.
        """
        if choice not in CHOICES:
            raise QueueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}", 422)
        conn = self.connect()
        try:
            with transaction(conn):
                lease = conn.execute(
                    "SELECT * FROM assignments WHERE id = ? AND annotator_id = ?", (assignment_id, annotator)
                ).fetchone()
                if lease is None:
                    raise QueueError(f"assignment {assignment_id} is not yours", 404)
                live = conn.execute(
                    "SELECT id, choice FROM answers WHERE assignment_id = ? AND undone IS NULL", (assignment_id,)
                ).fetchone()
                if live is not None:
                    if live["choice"] == choice:
                        return int(live["id"])
                    raise QueueError(f"assignment {assignment_id} is already answered ({live['choice']}); undo first")
                if lease["state"] != "open":
                    raise QueueError(f"assignment {assignment_id} has lapsed; load the next pair")
                a_first = bool(lease["a_is_first"])
                winner = {"A": "first" if a_first else "second", "B": "second" if a_first else "first"}.get(choice)
                winner = "tie" if choice == "tie" else winner
                cur = conn.execute(
                    """INSERT INTO answers (assignment_id, item_id, annotator_id, choice, a_is_first, winner,
                       reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                    (assignment_id, lease["item_id"], annotator, choice, int(a_first), winner, reason, time.time()),
                )
                answer_id = int(cur.fetchone()[0])
                state = "skipped" if choice == "skip" else "answered"
                conn.execute("UPDATE assignments SET state = ? WHERE id = ?", (state, assignment_id))
                return answer_id
        finally:
            conn.close()

    def undo(self, annotator: int) -> int:
        """Withdraw the annotator's last answer and re-open its pair for them (same sides); returns its item id."""
        conn = self.connect()
        try:
            with transaction(conn):
                last = conn.execute(
                    "SELECT id, assignment_id, item_id FROM answers WHERE annotator_id = ? AND undone IS NULL "
                    "ORDER BY id DESC LIMIT 1",
                    (annotator,),
                ).fetchone()
                if last is None:
                    raise QueueError("nothing to undo")
                now = time.time()
                conn.execute("UPDATE answers SET undone = ? WHERE id = ?", (now, last["id"]))
                # The pair they were looking at goes back to the pool; the undone one is theirs again.
                conn.execute(
                    "UPDATE assignments SET state = 'expired' WHERE annotator_id = ? AND state = 'open'", (annotator,)
                )
                conn.execute(
                    "UPDATE assignments SET state = 'open', issued = ? WHERE id = ?", (now, last["assignment_id"])
                )
                return int(last["item_id"])
        finally:
            conn.close()
